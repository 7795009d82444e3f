package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/internal/sgimport"
)

// maxPackageFile bounds a package file read by import (Serviceguard's are
// a few hundred lines).
const maxPackageFile = 1 << 20

type importCmd struct {
	Files        []string      `name:"file" short:"f" required:"" placeholder:"pkg.conf" help:"A Serviceguard modular package configuration file (cmmakepkg/cmgetconf); repeat for more packages."`
	Output       string        `short:"o" placeholder:"cluster.yaml" help:"Write the cluster file here instead of standard output; an existing file is kept unless --force."`
	Force        bool          `help:"Overwrite the --output file."`
	Cluster      string        `default:"imported" help:"The cluster's name."`
	Nodes        []string      `sep:"," placeholder:"node1,node2" help:"The cluster's nodes (node_name * stands for them); default: the nodes the packages name."`
	Driver       string        `enum:"process,virsh" default:"process" help:"Guest driver to write: process (a local vmguard agent, runs anywhere) or virsh (libvirt domains named after the guest)."`
	NodeTimeout  time.Duration `default:"20s" help:"The cluster's node_timeout (Serviceguard's MEMBER_TIMEOUT is in the cluster file, which is not read)."`
	GuestTimeout time.Duration `default:"10s" help:"The cluster's guest_timeout."`
	Strict       bool          `help:"Exit 1 when anything was not carried over as it was (the file is still written)."`
}

// errNotCarried marks a --strict import with notes.
var errNotCarried = errors.New("not everything was carried over")

// Run reads the package files, maps them, checks the result as `vmguard
// check` does and writes it, with the report on stderr and in the file's
// header comment.
func (c *importCmd) Run(ctx context.Context, g *globals) error {
	files := make([]*sgimport.File, 0, len(c.Files))
	for _, name := range c.Files {
		f, err := readPackageFile(name)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	res, err := sgimport.Map(files, sgimport.Options{
		Cluster: c.Cluster, Nodes: c.Nodes, Driver: c.Driver,
		NodeTimeout: c.NodeTimeout, GuestTimeout: c.GuestTimeout,
	})
	if res != nil {
		for _, n := range res.Notes {
			fmt.Fprintln(g.Stderr, "note:", n)
		}
	}
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	out, err := res.YAML(c.Files)
	if err != nil {
		return err
	}
	// What import writes must pass `vmguard check`; a failure here names
	// what the operator must fix (e.g. a cluster name) before anything is
	// written.
	target := c.Output
	if target == "" {
		target = "<stdout>"
	}
	if _, err := config.Parse(target, out); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(g.Stderr, e)
			}
		}
		return fmt.Errorf("import: the result does not pass vmguard check (nothing written): %w", err)
	}
	if c.Output == "" {
		if _, err := g.Stdout.Write(out); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	} else if err := writeNew(c.Output, out, c.Force); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "imported %d %s on %d %s from %d %s; %d %s\n",
		len(res.Cluster.Packages), countNoun(len(res.Cluster.Packages), "package"),
		len(res.Cluster.Nodes), countNoun(len(res.Cluster.Nodes), "node"),
		len(c.Files), countNoun(len(c.Files), "file"),
		len(res.Notes), countNoun(len(res.Notes), "note"))
	if c.Strict && len(res.Notes) > 0 {
		return errNotCarried
	}
	return nil
}

// readPackageFile reads and parses one package file, at most maxPackageFile bytes.
func readPackageFile(name string) (*sgimport.File, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read package file: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxPackageFile+1))
	if err != nil {
		return nil, fmt.Errorf("read package file %s: %w", name, err)
	}
	if len(data) > maxPackageFile {
		return nil, fmt.Errorf("read package file %s: larger than %d bytes; is it a package configuration file?", name, maxPackageFile)
	}
	f, err := sgimport.Parse(name, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse package file: %w", err)
	}
	return f, nil
}

// writeNew writes data to path, refusing to replace a file unless force.
func writeNew(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	fh, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("write %s: the file exists; give --force to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
