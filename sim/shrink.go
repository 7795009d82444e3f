package sim

// Shrink looks for a smaller fault schedule that still breaks a promise
// the run of opt breaks: it tries to leave out each fault of the schedule,
// last first, and keeps every omission after which the run still breaks a
// promise under the same rule (or fails liveness, if that is what it did).
// It returns the options with the smallest schedule found (Skip set) and
// their result; at most maxRuns runs. A run that keeps every promise is
// returned as it is.
func Shrink(opt Options, maxRuns int) (Options, Result) {
	r := Run(opt)
	want := failure(r)
	if want == "" {
		return opt, r
	}
	skip := map[int]bool{}
	for k, v := range opt.Skip {
		skip[k] = v
	}
	runs := 1
	for i := r.Scheduled - 1; i >= 0 && runs < maxRuns; i-- {
		if skip[i] {
			continue
		}
		skip[i] = true
		try := opt
		try.Skip = skip
		rr := Run(try)
		runs++
		if failure(rr) == want {
			r = rr
			continue
		}
		delete(skip, i)
	}
	opt.Skip = skip
	return opt, r
}

// failure names what a run broke: the rule of its first violation,
// "liveness", or "" for nothing.
func failure(r Result) string {
	switch {
	case len(r.Violations) > 0:
		return string(r.Violations[0].Rule)
	case len(r.Liveness) > 0:
		return "liveness"
	}
	return ""
}
