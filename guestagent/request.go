package guestagent

import "github.com/vmguard/vmguard/events"

// parseBody decodes the body of a request into a T (an empty body is an
// empty request if allowEmpty) and checks it with check: what the handler
// acts on, or the error it replies (a *RemoteError: CodeBadRequest or
// CodeTooLarge). Pure, so that it can be fuzzed.
func parseBody[T any](data []byte, allowEmpty bool, check func(*T) error) (T, error) {
	var req, zero T
	if err := decodeRequest(data, &req, allowEmpty); err != nil {
		return zero, err
	}
	if err := check(&req); err != nil {
		return zero, badRequest(err)
	}
	return req, nil
}

// parseRun decodes and checks the body of a run request (parseBody).
func parseRun(data []byte) (RunRequest, error) { return parseBody(data, false, validateRun) }

// parseStop decodes and checks the body of a stop request (parseBody).
func parseStop(data []byte) (StopRequest, error) { return parseBody(data, false, validateStop) }

// parseList decodes and checks the body of a list request (parseBody;
// empty: list every running process).
func parseList(data []byte) (ListRequest, error) {
	return parseBody(data, true, func(req *ListRequest) error {
		if req.Package == "" {
			return nil
		}
		return events.CheckName("package", req.Package)
	})
}
