package vicpull

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func appOptions(t *testing.T) Options {
	return Options{Reference: fixture.app, Store: t.TempDir(), PlainHTTP: true}
}

func TestPullMatchesSeededImage(t *testing.T) {
	opts := appOptions(t)
	var events []Progress
	opts.OnProgress = func(p Progress) { events = append(events, p) }

	res, err := Pull(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ManifestDigest != fixture.appDigest || res.Digest != fixture.appDigest {
		t.Errorf("digests %s / %s, testkit seeded %s", res.Digest, res.ManifestDigest, fixture.appDigest)
	}
	if len(res.Layers) != 2 || res.Store != opts.Store || res.Reference != fixture.app {
		t.Errorf("result %+v", res)
	}
	for _, l := range res.Layers {
		if !strings.HasPrefix(l.Digest, "sha256:") ||
			!strings.HasPrefix(l.DiffID, "sha256:") || l.Size == 0 {
			t.Errorf("layer %+v", l)
		}
	}
	var raw map[string]any
	err = json.Unmarshal(res.JSON, &raw)
	if err != nil || raw["manifest_digest"] != fixture.appDigest {
		t.Errorf("raw JSON %s (%v)", res.JSON, err)
	}
	if n := checkBlobs(t, opts.Store); n < 4 { // config, two layers, manifest(s)
		t.Errorf("only %d blobs", n)
	}
	if _, err := os.Stat(filepath.Join(opts.Store, "index.json")); err != nil {
		t.Error(err)
	}
	if left := ingestLeftovers(t, opts.Store); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
	checkProgressOrder(t, events, res)
}

// checkProgressOrder: all events arrived, image-level ones frame the
// layer ones, and each layer goes through its steps in order.
func checkProgressOrder(t *testing.T, events []Progress, res *Result) {
	t.Helper()
	if len(events) < 3 {
		t.Fatalf("only %d events", len(events))
	}
	first, last := events[0], events[len(events)-1]
	if first.Kind != PullingFrom || last.Kind != StatusKind ||
		events[len(events)-2].Kind != DigestKind {
		t.Errorf("first %v, last %v", first, last)
	}
	step := map[ProgressKind]int{
		PullingFSLayer: 1, Waiting: 2, Downloading: 3, VerifyingChecksum: 4,
		DownloadComplete: 5, PullComplete: 6,
	}
	for _, l := range res.Layers {
		at, bytes, seen := 0, uint64(0), map[ProgressKind]bool{}
		for _, e := range events {
			if e.Layer != l.Digest {
				continue
			}
			seen[e.Kind] = true
			if step[e.Kind] < at {
				t.Errorf("layer %s: %v after step %d", l.Digest, e.Kind, at)
			}
			at = step[e.Kind]
			if e.Kind == Downloading {
				if e.Current < bytes || e.Total != l.Size {
					t.Errorf("layer %s: downloading %d/%d after %d", l.Digest, e.Current, e.Total, bytes)
				}
				bytes = e.Current
			}
		}
		for _, k := range []ProgressKind{PullingFSLayer, Downloading, DownloadComplete, PullComplete} {
			if !seen[k] {
				t.Errorf("layer %s: no %v event", l.Digest, k)
			}
		}
		if bytes != l.Size {
			t.Errorf("layer %s: last downloading %d, size %d", l.Digest, bytes, l.Size)
		}
	}
}

func TestPullWithoutProgressThenUpToDate(t *testing.T) {
	opts := appOptions(t)
	first, err := Pull(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Pull(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.UpToDate || !again.UpToDate || again.ManifestDigest != first.ManifestDigest {
		t.Errorf("up_to_date %v then %v", first.UpToDate, again.UpToDate)
	}
}

func TestBadOptionsGiveSentinelAndMessage(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want error
		text string
	}{
		{"concurrency", Options{Reference: "a/b", Store: t.TempDir(), MaxConcurrentDownloads: 65},
			ErrInvalidArgument, "max_concurrent_downloads must be 1 to 64"},
		{"negative", Options{Reference: "a/b", Store: t.TempDir(), MaxAttempts: -1},
			ErrInvalidArgument, "max_attempts"},
		{"credentials", Options{Reference: "a/b", Store: t.TempDir(), Username: "u"},
			ErrInvalidArgument, "username and password go together"},
		{"no store", Options{Reference: "a/b"}, ErrInvalidArgument, "store"},
		{"reference", Options{Reference: "UPPER/Case::x", Store: t.TempDir()},
			ErrBadReference, ""},
		{"extra unknown", Options{Reference: "a/b", Store: t.TempDir(),
			Extra: map[string]any{"bogus": 1}}, ErrInvalidArgument, "unknown field `bogus`"},
		{"extra twice", Options{Reference: "a/b", Store: t.TempDir(), MaxAttempts: 2,
			Extra: map[string]any{"max_attempts": 3}}, ErrInvalidArgument, "both"},
		{"extra range", Options{Reference: "a/b", Store: t.TempDir(),
			Extra: map[string]any{"max_attempts": 0}}, ErrInvalidArgument, "max_attempts must be 1 to 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Pull(context.Background(), c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Message == "" || !strings.Contains(e.Message, c.text) {
				t.Fatalf("err %#v lacks %q", err, c.text)
			}
			if strings.HasPrefix(e.Message, e.Code.String()) {
				t.Errorf("message keeps the code prefix: %q", e.Message)
			}
			if errors.Is(err, ErrNotFound) || errors.Is(err, context.Canceled) {
				t.Errorf("%v matches the wrong sentinel", err)
			}
		})
	}
}

func TestMissingTagIsNotFound(t *testing.T) {
	opts := appOptions(t)
	opts.Reference = fixture.registry + "/go/app:nope"
	_, err := Pull(context.Background(), opts)
	var e *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.Code != CodeNotFound {
		t.Fatalf("err %v", err)
	}
	t.Logf("message: %v", err)
}

// waitForBytes returns an OnProgress that signals once a layer has
// started to arrive, and the channel it signals on.
func waitForBytes() (func(Progress), chan struct{}) {
	started := make(chan struct{})
	var once sync.Once
	return func(p Progress) {
		if p.Kind == Downloading && p.Current > 0 {
			once.Do(func() { close(started) })
		}
	}, started
}

func TestContextCancelIsPrompt(t *testing.T) {
	store := t.TempDir()
	onProgress, started := waitForBytes()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		err error
		at  time.Time
	}
	done := make(chan outcome, 1)
	go func() {
		opts := Options{Reference: fixture.big, Store: store, PlainHTTP: true, OnProgress: onProgress}
		_, err := Pull(ctx, opts)
		done <- outcome{err, time.Now()}
	}()
	select {
	case <-started:
	case o := <-done:
		t.Fatalf("pull ended before it was cancelled: %v", o.err)
	case <-time.After(30 * time.Second):
		t.Fatal("no download progress within 30 s")
	}
	t0 := time.Now()
	cancel()
	o := <-done
	took := o.at.Sub(t0)
	t.Logf("cancel took %v: %v", took, o.err)
	if took > time.Second {
		t.Errorf("Pull returned %v after cancel", took)
	}
	if !errors.Is(o.err, context.Canceled) || !errors.Is(o.err, ErrCancelled) {
		t.Errorf("err %v", o.err)
	}
	if left := ingestLeftovers(t, store); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestContextDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := Pull(ctx, Options{Reference: fixture.big, Store: t.TempDir(), PlainHTTP: true})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 1300*time.Millisecond {
		t.Fatalf("err %v after %v", err, time.Since(t0))
	}
}

func TestAlreadyCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Pull(ctx, appOptions(t))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("err %v", err)
	}
}

type boom struct{ n int }

func (b boom) Error() string { return "boom" }

func TestPanicInCallbackCancelsAndIsReturned(t *testing.T) {
	store := t.TempDir()
	t0 := time.Now()
	_, err := Pull(context.Background(), Options{
		Reference: fixture.big, Store: store, PlainHTTP: true,
		OnProgress: func(p Progress) {
			if p.Kind == Downloading && p.Current > 0 {
				panic(boom{7})
			}
		},
	})
	var pe *CallbackPanicError
	if !errors.As(err, &pe) || pe.Value != (boom{7}) || len(pe.Stack) == 0 {
		t.Fatalf("err %#v", err)
	}
	var b boom
	if !errors.As(err, &b) || b.n != 7 {
		t.Errorf("panic value not reachable through errors.As: %v", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Errorf("took %v: the pull was not cancelled", time.Since(t0))
	}
	if left := ingestLeftovers(t, store); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestStartStatusCancelWait(t *testing.T) {
	h, err := Start(Options{Reference: fixture.big, Store: t.TempDir(), PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	st, err := h.Status()
	if err != nil || st.State != StatePending || st.Result != CodePending {
		t.Fatalf("status %+v, %v", st, err)
	}
	h.Cancel()
	h.Cancel() // idempotent
	_, err = h.Wait(context.Background())
	if !errors.Is(err, ErrCancelled) || errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	_, again := h.Wait(context.Background())
	if again != err {
		t.Errorf("second Wait gave %v", again)
	}
	// The terminal state shows once the finalizer has returned.
	deadline := time.Now().Add(2 * time.Second)
	for st.State == StatePending && time.Now().Before(deadline) {
		st, _ = h.Status()
	}
	if st.State != StateCancelled || st.Result != CodeCancelled {
		t.Errorf("status after cancel %+v", st)
	}
	h.Close()
	h.Close()
	if _, err := h.Status(); err == nil {
		t.Error("Status after Close succeeded")
	}
	h.Cancel() // a no-op after Close
}

func TestUnreachableHandleIsFinalized(t *testing.T) {
	h, err := Start(Options{Reference: fixture.big, Store: t.TempDir(), PlainHTTP: true,
		OnProgress: func(Progress) {}})
	if err != nil {
		t.Fatal(err)
	}
	st := h.st
	h = nil
	for i := 0; i < 200 && !closed(st.finalized); i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if !closed(st.finalized) {
		t.Fatal("dropped handle was not closed by the GC")
	}
	<-st.dispatched
	if st.code != CodeCancelled {
		t.Errorf("code %v", st.code)
	}
}

func TestConcurrentPulls(t *testing.T) {
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var n int
			opts := Options{Reference: fixture.app, Store: filepath.Join(t.TempDir(), "s"),
				PlainHTTP: true, OnProgress: func(Progress) { n++ }}
			res, err := Pull(context.Background(), opts)
			if err == nil && (res.ManifestDigest != fixture.appDigest || n == 0) {
				err = errors.New("wrong result or no progress")
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestNamesMatchLibrary(t *testing.T) {
	for c := Code(0); c <= 16; c++ {
		if c.String() != codeName(c) {
			t.Errorf("code %d: %q, library says %q", c, c.String(), codeName(c))
		}
	}
	if Version() != "0.1.0" {
		t.Errorf("version %q", Version())
	}
	for c := CodeInvalidArgument; c <= CodeHostRejected; c++ {
		if c == CodePending {
			continue
		}
		e := newError(c, c.String()+": text")
		if !errors.Is(e, sentinels[c]) || e.Message != "text" {
			t.Errorf("code %v: sentinel or message wrong: %v", c, e)
		}
	}
}

func TestCancelKeepsPartialThatCanBePurged(t *testing.T) {
	store := t.TempDir()
	onProgress, started := waitForBytes()
	opts := Options{Reference: fixture.big, Store: store, PlainHTTP: true, OnProgress: onProgress}
	h, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	h.Close()
	partials, _ := filepath.Glob(filepath.Join(store, ".vicpull", "ingest", "*.partial"))
	if len(partials) == 0 {
		t.Fatal("a cancelled download left no partial to resume from")
	}
	files, bytes, err := PurgePartials(store, 0, 0)
	if err != nil || files != uint64(len(partials)) || bytes == 0 {
		t.Fatalf("purged %d files, %d bytes, %v (had %v)", files, bytes, err, partials)
	}
	if files, _, err := PurgePartials(store, 0, 0); err != nil || files != 0 {
		t.Fatalf("second purge: %d, %v", files, err)
	}
	_, _, err = PurgePartials(store+"/\xff", 0, 0)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidArgument || !strings.Contains(e.Message, "UTF-8") {
		t.Fatalf("non-UTF-8 path: %v", err)
	}
}

func TestSlowCallbackDoesNotHoldUpTheLibrary(t *testing.T) {
	var delivered atomic.Int32
	var last Progress // written by the callbacks, read after Wait
	h, err := Start(Options{Reference: fixture.app, Store: t.TempDir(), PlainHTTP: true,
		OnProgress: func(p Progress) {
			time.Sleep(20 * time.Millisecond)
			delivered.Add(1)
			last = p
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for {
		st, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.State != StatePending {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	atLibraryEnd := delivered.Load()
	if _, err := h.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := delivered.Load()
	t.Logf("%d of %d events delivered when the library finished", atLibraryEnd, total)
	if atLibraryEnd >= total {
		t.Errorf("the library waited for the slow callback (%d of %d)", atLibraryEnd, total)
	}
	// Wait returned only after every event was delivered.
	if last.Kind != StatusKind {
		t.Errorf("last event delivered: %+v", last)
	}
}
