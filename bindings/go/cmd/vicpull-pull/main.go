// Command vicpull-pull pulls an image into an OCI layout with libvicpull,
// printing Docker-style progress lines on stderr.
//
//	go run ./bindings/go/cmd/vicpull-pull REF --store DIR [--plain-http]
//	    [--platform OS/ARCH] [--json]
//
// Ctrl-C cancels the pull (exit status 130).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"vicpull.dev/vicpull"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("vicpull-pull", flag.ContinueOnError)
	store := fs.String("store", "", "OCI layout directory (required)")
	plain := fs.Bool("plain-http", false, "reach the registry over plain HTTP")
	platform := fs.String("platform", "", "os/arch[/variant] (default: this host)")
	asJSON := fs.Bool("json", false, "print the result JSON on stdout")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(),
			"usage: vicpull-pull REF --store DIR [--plain-http] [--platform P] [--json]")
		fs.PrintDefaults()
	}
	// Flags may come before or after REF.
	var refs []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		refs = append(refs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(refs) != 1 || *store == "" {
		fs.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bar := newProgressPrinter()
	res, err := vicpull.Pull(ctx, vicpull.Options{
		Reference:  refs[0],
		Store:      *store,
		PlainHTTP:  *plain,
		Platform:   *platform,
		OnProgress: bar.print,
	})
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "vicpull-pull: interrupted, pull cancelled")
		return 130
	case err != nil:
		fmt.Fprintln(os.Stderr, "vicpull-pull:", err)
		return 1
	}
	if *asJSON {
		os.Stdout.Write(res.JSON)
		fmt.Println()
	} else {
		fmt.Printf("%s\n  manifest %s\n  %d layers, %d bytes downloaded, into %s\n",
			res.Reference, res.ManifestDigest, len(res.Layers), res.BytesDownloaded, res.Store)
	}
	return 0
}

// progressPrinter prints one line per step and Downloading lines only
// when a layer's percentage moved by 10 points, to keep logs short.
type progressPrinter struct{ shown map[string]uint64 }

func newProgressPrinter() *progressPrinter {
	return &progressPrinter{shown: map[string]uint64{}}
}

func (pp *progressPrinter) print(p vicpull.Progress) {
	if p.Layer == "" {
		fmt.Fprintln(os.Stderr, p.Message)
		return
	}
	id := p.Layer
	if len(id) > 19 {
		id = id[7:19] // "sha256:" then 12 hex digits, as Docker shows
	}
	if p.Kind == vicpull.Downloading && p.Total > 0 {
		pct := p.Current * 100 / p.Total
		if last, ok := pp.shown[p.Layer]; ok && pct < last+10 && pct != 100 {
			return
		}
		pp.shown[p.Layer] = pct
		fmt.Fprintf(os.Stderr, "%s: %s %3d%% (%d/%d)\n", id, p.Message, pct, p.Current, p.Total)
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", id, p.Message)
}
