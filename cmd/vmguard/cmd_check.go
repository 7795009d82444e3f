package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmguard/vmguard/config"
)

type checkCmd struct {
	File string `name:"file" short:"f" required:"" placeholder:"cluster.yaml" help:"Cluster configuration to check."`
}

// Run validates the file (cmcheckconf) and prints a one-line summary, or
// every problem as file:line: field: what is wrong.
func (c *checkCmd) Run(ctx context.Context, g *globals) error {
	cl, err := loadConfigFile(g, c.File)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "ok: %s\n", configSummary(cl))
	return nil
}

// loadConfigFile loads and validates file; it prints each problem on stderr and
// returns an error that counts them.
func loadConfigFile(g *globals, file string) (*config.Cluster, error) {
	cl, err := config.Load(file)
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(g.Stderr, e)
		}
		noun := "problems"
		if len(errs) == 1 {
			noun = "problem"
		}
		return nil, fmt.Errorf("check %s: %d %s", file, len(errs), noun)
	}
	if err != nil {
		return nil, err
	}
	return cl, nil
}

func configSummary(c *config.Cluster) string {
	return fmt.Sprintf("%d %s, %d %s", len(c.Nodes), countNoun(len(c.Nodes), "node"), len(c.Packages), countNoun(len(c.Packages), "package"))
}

func countNoun(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
