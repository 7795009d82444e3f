package guestagent

// Running returns how many processes the agent runs now (the gauge
// vmguard_agent_processes).
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running
}
