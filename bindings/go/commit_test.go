package vicpull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hookLog records, on the dispatcher goroutine, what the hooks saw: every
// offer, and how many PullComplete events its layer had had by then.
type hookLog struct {
	offers   []LayerCommit
	complete map[string]int // layer digest -> PullComplete events so far
	before   []int          // complete[digest] when each offer came
}

func (h *hookLog) options(t *testing.T, refuse func(LayerCommit) error) Options {
	h.complete = map[string]int{}
	opts := appOptions(t)
	opts.OnProgress = func(p Progress) {
		if p.Kind == PullComplete {
			h.complete[p.Layer]++
		}
	}
	opts.OnCommit = func(l LayerCommit) error {
		h.offers = append(h.offers, l)
		h.before = append(h.before, h.complete[l.Digest])
		return refuse(l)
	}
	return opts
}

// blobHash is the digest of a file's bytes ("" and an error if unreadable);
// hooks call it, so it must not use t.Fatal.
func blobHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestCommitHookSeesEveryLayerInOrder(t *testing.T) {
	var log hookLog
	hashed := map[string]string{} // digest -> hash of Path, read in the hook
	opts := log.options(t, func(l LayerCommit) error {
		hashed[l.Digest] = blobHash(t, l.Path)
		return nil
	})
	res, err := Pull(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.offers) != len(res.Layers) || len(res.Layers) != 2 {
		t.Fatalf("%d offers for %d layers", len(log.offers), len(res.Layers))
	}
	blobs := filepath.Join(opts.Store, "blobs", "sha256")
	for i, got := range log.offers {
		want := res.Layers[i]
		if got.Index != i || got.Layer != want {
			t.Errorf("offer %d: %+v, manifest has %+v", i, got, want)
		}
		if !strings.HasPrefix(got.DiffID, "sha256:") || got.Size == 0 {
			t.Errorf("offer %d: diffID %q size %d", i, got.DiffID, got.Size)
		}
		if got.Path != filepath.Join(blobs, strings.TrimPrefix(got.Digest, "sha256:")) {
			t.Errorf("offer %d: path %s", i, got.Path)
		}
		if hashed[got.Digest] != got.Digest {
			t.Errorf("offer %d: the file at Path hashed to %s", i, hashed[got.Digest])
		}
		if log.before[i] != 0 || log.complete[got.Digest] != 1 {
			t.Errorf("layer %d: %d PullComplete before the offer, %d in all",
				i, log.before[i], log.complete[got.Digest])
		}
	}

	// Without diffID checks the hook gets no diffID.
	var bare hookLog
	opts = bare.options(t, func(LayerCommit) error { return nil })
	opts.SkipDiffIDCheck = true
	if _, err := Pull(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if len(bare.offers) != 2 || bare.offers[0].DiffID != "" || bare.offers[1].DiffID != "" {
		t.Errorf("offers without diffID check: %+v", bare.offers)
	}
}

var errDiskFull = errors.New("disk image full")

// namedImages counts index.json entries that name an image.
func namedImages(t *testing.T, store string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(store, "index.json"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range index.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != "" {
			n++
		}
	}
	return n
}

func TestCommitHookErrorRefusesSecondLayer(t *testing.T) {
	var log hookLog
	opts := log.options(t, func(l LayerCommit) error {
		if l.Index == 1 {
			return errDiskFull
		}
		return nil
	})
	h, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = h.Wait(context.Background())
	if !errors.Is(err, ErrHostRejected) || !errors.Is(err, errDiskFull) {
		t.Fatalf("err %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeHostRejected ||
		!strings.Contains(e.Message, "disk image full") ||
		!strings.Contains(e.Message, log.offers[1].Digest) {
		t.Errorf("error %#v", e)
	}
	if len(log.offers) != 2 {
		t.Fatalf("%d offers", len(log.offers))
	}
	first, second := log.offers[0], log.offers[1]
	if log.complete[first.Digest] != 1 || log.complete[second.Digest] != 0 {
		t.Errorf("PullComplete: first %d, refused %d",
			log.complete[first.Digest], log.complete[second.Digest])
	}
	st, err := h.Status()
	if err != nil || st.State != StateFailed || st.Result != CodeHostRejected || st.LayersDone != 1 {
		t.Errorf("status %+v, %v", st, err)
	}
	if n := namedImages(t, opts.Store); n != 0 {
		t.Errorf("%d images named in index.json after a refusal", n)
	}
	checkCommittedBlobs(t, first, second)
}

// checkCommittedBlobs: the accepted layer's blob is in the store; the
// refused one was verified there before it was offered (Path is the
// store's file), so it stays as a verified blob no image refers to.
func checkCommittedBlobs(t *testing.T, accepted, refused LayerCommit) {
	t.Helper()
	if blobHash(t, accepted.Path) != accepted.Digest {
		t.Errorf("accepted layer's blob %s does not hash to its digest", accepted.Path)
	}
	if _, err := os.Stat(refused.Path); err != nil {
		t.Errorf("refused layer's blob: %v", err)
	}
}

type hookBoom struct{ n int }

func TestPanicInCommitHookRefusesLayer(t *testing.T) {
	var log hookLog
	opts := log.options(t, func(l LayerCommit) error { panic(hookBoom{l.Index + 3}) })
	_, err := Pull(context.Background(), opts)
	if !errors.Is(err, ErrHostRejected) {
		t.Fatalf("err %v", err)
	}
	var pe *CallbackPanicError
	if !errors.As(err, &pe) || pe.Callback != "OnCommit" || pe.Value != (hookBoom{3}) ||
		len(pe.Stack) == 0 {
		t.Fatalf("panic not wrapped: %#v", err)
	}
	if !strings.Contains(err.Error(), "commit hook panicked") {
		t.Errorf("message %q", err)
	}
	if len(log.offers) != 1 || namedImages(t, opts.Store) != 0 {
		t.Errorf("%d offers, %d images", len(log.offers), namedImages(t, opts.Store))
	}
	if left := ingestLeftovers(t, opts.Store); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestCloseWaitsForRunningCommitHook(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	opts := appOptions(t)
	opts.OnCommit = func(l LayerCommit) error {
		if l.Index == 0 {
			close(entered)
			<-release
		}
		return nil
	}
	h, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	closed := make(chan struct{})
	go func() {
		h.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while OnCommit was running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after OnCommit did")
	}
	if n := namedImages(t, opts.Store); n != 0 {
		t.Errorf("%d images named after Close", n)
	}
}
