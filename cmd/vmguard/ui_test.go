package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

var uiScreenshot = flag.String("ui-screenshot", "", "write a PNG screenshot of the web console to this file (TestUIInBrowser)")

// chromium returns the path of a Chromium to drive: $VMGUARD_CHROMIUM, else
// chromium on PATH (Debian's package, which .ci/run installs). Without one
// the test is skipped, except in CI, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VMGUARD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH (.ci/run installs Debian's chromium package)")
	}
	t.Skip("no chromium on PATH: apt-get install -y chromium")
	return ""
}

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// Start the browser now, on a context without a timeout (a timeout
	// there would stop the browser when it ran out).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// eval evaluates js in the page and decodes its value into out, each call
// bounded to 10 s.
func eval[T any](ctx context.Context, js string, out *T) error {
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ectx, chromedp.Evaluate[T](js))
	if err == nil {
		*out = v
	}
	return err
}

// TestUIInBrowser opens `vmguard up`'s web console in headless Chromium: the
// page shows the demo's packages; a failover written after the page loaded
// appears in its timeline, and web's card moves to the new node, each within
// 2 s of the event's time (the page stamps when it showed each; the browser
// and the controller share this machine's clock); the time-travel slider
// shows web back on its first node; the explain chain names the failover.
func TestUIInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up and a browser; run without -short")
	}
	store := t.TempDir()
	port := freePort(t)
	cmd, out, base := startUpWeb(t, store, port)
	natstest.WaitFor(t, 30*time.Second, "the console to answer", func() bool {
		_, err := scrape(base + "/metrics")
		return err == nil
	})
	ctx := browser(t)
	nctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	if err := chromedp.Do(nctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open %s: %v", base, err)
	}
	cancel()

	var pkgs []string
	natstest.WaitFor(t, 30*time.Second, "the page to show packages web and db", func() bool {
		err := eval(ctx, `[...document.querySelectorAll("#packages [data-package]")].map(e => e.dataset.package)`, &pkgs)
		return err == nil && strings.Join(pkgs, ",") == "web,db"
	})
	var loaded uint64
	natstest.WaitFor(t, 30*time.Second, "the page to load the timeline", func() bool {
		var s string
		err := eval(ctx, `document.body.dataset.loadedSeq || ""`, &s)
		if err != nil || s == "" {
			return false
		}
		_, err = fmt.Sscan(s, &loaded)
		return err == nil
	})

	// The first failover written after the page loaded.
	l := dialLog(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	fctx, stopFollow := context.WithTimeout(context.Background(), 150*time.Second)
	defer stopFollow()
	found := make(chan events.Event, 1)
	go func() {
		_ = l.Follow(fctx, events.ReadOptions{StartSeq: loaded + 1}, func(e events.Event) error {
			if d, ok := e.Data.(events.PackagePlaced); ok && strings.HasPrefix(d.Reason, "failover") {
				found <- e
				return errors.New("found")
			}
			return nil
		})
	}()
	var fo events.Event
	select {
	case fo = <-found:
	case <-fctx.Done():
		t.Fatalf("no failover within 150 s after the page loaded (seq %d)\n%s", loaded, out.String())
	}
	placed := fo.Data.(events.PackagePlaced)

	type shown struct {
		Row   string `json:"row"`   // when the timeline row appeared (ms since the epoch)
		Node  string `json:"node"`  // web's card: its node
		Epoch string `json:"epoch"` // and epoch
		Since string `json:"since"` // when the card first showed that placement
	}
	var s shown
	js := fmt.Sprintf(`(() => { const r = document.querySelector('#timeline tr[data-seq="%d"]'); const c = document.querySelector('#packages [data-package=%q]');
		return {row: r ? r.dataset.shown : "", node: c ? c.dataset.node : "", epoch: c ? c.dataset.epoch : "", since: c ? c.dataset.since : ""}; })()`, fo.Seq, fo.Subject)
	natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("failover #%d (%s to %s) on the page", fo.Seq, fo.Subject, placed.Node), func() bool {
		err := eval(ctx, js, &s)
		return err == nil && s.Row != "" && s.Node == placed.Node && s.Epoch == fmt.Sprint(placed.Epoch)
	})
	var rowMS, sinceMS int64
	if _, err := fmt.Sscan(s.Row+" "+s.Since, &rowMS, &sinceMS); err != nil {
		t.Fatalf("page stamps %+v: %v", s, err)
	}
	at := fo.Time.UnixMilli()
	rowAfter, cardAfter := time.Duration(rowMS-at)*time.Millisecond, time.Duration(sinceMS-at)*time.Millisecond
	t.Logf("failover #%d at %s: timeline row after %v, %s's card on %s after %v", fo.Seq, fo.Time.Format("15:04:05.000"), rowAfter, fo.Subject, placed.Node, cardAfter)
	for what, d := range map[string]time.Duration{"the timeline row": rowAfter, "the package card": cardAfter} {
		if d > 2*time.Second {
			t.Errorf("%s showed failover #%d %v after its event, want within 2s", what, fo.Seq, d)
		}
	}

	// Explain names the failover.
	natstest.WaitFor(t, 10*time.Second, "the explain chain of "+fo.Subject, func() bool {
		var txt string
		err := eval(ctx, fmt.Sprintf(`(() => { const s = document.querySelector("#explain-pkg"); if (s.value !== %q) { s.value = %q; s.dispatchEvent(new Event("change")); } return document.querySelector("#explain").textContent; })()`, fo.Subject, fo.Subject), &txt)
		return err == nil && strings.Contains(txt, fmt.Sprintf("#%d ", fo.Seq)) && strings.Contains(txt, "reason=failover")
	})

	if *uiScreenshot != "" {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err != nil {
			t.Errorf("screenshot: %v", err)
		} else if err := os.WriteFile(*uiScreenshot, png, 0o644); err != nil {
			t.Error(err)
		}
		cancel()
	}

	// Time travel: when the package last started before the failover, it
	// was on its previous node.
	var before uint64
	for _, e := range readLog(t, l) {
		if _, ok := e.Data.(events.PackageStarted); ok && e.Subject == fo.Subject && e.Seq < fo.Seq {
			before = e.Seq
		}
	}
	if before == 0 {
		t.Fatalf("no package.started of %s before failover #%d", fo.Subject, fo.Seq)
	}
	var back shown
	natstest.WaitFor(t, 15*time.Second, fmt.Sprintf("the slider at seq %d to show %s on %s", before, fo.Subject, placed.PreviousNode), func() bool {
		err := eval(ctx, fmt.Sprintf(`(() => { const s = document.querySelector("#at"); if (s.value !== "%d") { s.value = "%d"; s.dispatchEvent(new Event("input")); }
			const c = document.querySelector('#packages [data-package=%q]'); return {node: c ? c.dataset.node : "", epoch: document.body.dataset.statusSeq}; })()`, before, before, fo.Subject), &back)
		return err == nil && back.Epoch == fmt.Sprint(before) && back.Node == placed.PreviousNode
	})
	interrupt(t, cmd, out)
}
