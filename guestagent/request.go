package guestagent

import "github.com/vmguard/vmguard/events"

// parseRun decodes and checks the body of a run request: what handleRun
// acts on, or the error it replies (a *RemoteError, CodeBadRequest or
// CodeTooLarge). Pure, so that it can be fuzzed.
func parseRun(data []byte) (RunRequest, error) {
	var req RunRequest
	if err := decodeRequest(data, &req, false); err != nil {
		return RunRequest{}, err
	}
	if err := validateRun(&req); err != nil {
		return RunRequest{}, badRequest(err)
	}
	return req, nil
}

// parseStop decodes and checks the body of a stop request, as parseRun.
func parseStop(data []byte) (StopRequest, error) {
	var req StopRequest
	if err := decodeRequest(data, &req, false); err != nil {
		return StopRequest{}, err
	}
	if err := validateStop(req); err != nil {
		return StopRequest{}, badRequest(err)
	}
	return req, nil
}

// parseList decodes and checks the body of a list request (empty: list
// every running process), as parseRun.
func parseList(data []byte) (ListRequest, error) {
	var req ListRequest
	if err := decodeRequest(data, &req, true); err != nil {
		return ListRequest{}, err
	}
	if req.Package != "" {
		if err := events.CheckName("package", req.Package); err != nil {
			return ListRequest{}, badRequest(err)
		}
	}
	return req, nil
}
