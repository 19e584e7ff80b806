package vicpull

import (
	"encoding/json"
	"fmt"
	"time"
)

// Options describe one pull. Reference and Store are required; a zero
// value of any other field means the library's default.
type Options struct {
	// Reference names the image: "busybox", "host:5000/a/b:tag",
	// "repo@sha256:...".
	Reference string
	// Store is the OCI image-layout directory, created if missing.
	Store string
	// Platform is "os/arch[/variant]"; empty means the host's.
	Platform string
	// PlainHTTP reaches every registry over plain HTTP (no TLS).
	PlainHTTP bool
	// PlainHTTPHosts lists "host:port" registries reached over plain HTTP,
	// when PlainHTTP is false.
	PlainHTTPHosts []string
	// Username and Password log in with basic credentials; Token is a
	// bearer token used as is. Give one or the other.
	Username, Password, Token string
	// MaxConcurrentDownloads is 1 to 64 (library default 3).
	MaxConcurrentDownloads int
	// MaxAttempts per request is 1 to 100 (library default 5).
	MaxAttempts int
	// SkipDiffIDCheck turns off gunzipping each layer to check its diffID
	// against the image config (checked by default).
	SkipDiffIDCheck bool
	// Priority orders pulls competing for download slots: higher first,
	// then round-robin (library default 0).
	Priority int
	// LowSpeedLimit (bytes/s, default 1024) and LowSpeedTime (whole
	// seconds, default 30 s): a connection slower than the limit for that
	// long is replaced and the download resumed.
	LowSpeedLimit uint64
	LowSpeedTime  time.Duration
	// PartialMaxAge (whole seconds, default 7 days) and PartialMaxBytes
	// (default 8 GiB) limit kept partial downloads; applied when a store is
	// first used in the process.
	PartialMaxAge   time.Duration
	PartialMaxBytes uint64

	// Extra holds further options by their JSON key (see vic_pull_start in
	// include/vicpull.h), for keys the fields above do not name yet, e.g.
	// {"registries": map[string]any{...}}. A key also set above is an error.
	Extra map[string]any

	// OnProgress, if set, receives every progress event of the pull, in
	// order, one at a time, on a goroutine of this package (never on a
	// library thread). A slow callback delays only later events: the
	// library thread hands each event over and returns at once. A panic in
	// it cancels the pull, and Pull/Wait return a *CallbackPanicError.
	OnProgress func(Progress)

	// OnCommit, if set, is offered each verified layer in manifest order
	// (parent before child) before the library commits it, on the same
	// goroutine as OnProgress and after every event that came before. The
	// pull waits for its answer. A nil error accepts the layer; an error
	// refuses it, and the pull fails with an *Error matching
	// ErrHostRejected that wraps the hook's error (a panic is recovered and
	// refuses too, wrapped as a *CallbackPanicError). It must not Wait for
	// or Close its own pull.
	OnCommit func(LayerCommit) error
}

// wire is the options JSON of vic_pull_start; nil/zero fields are left
// out so the library applies its defaults.
type wire struct {
	Reference              string  `json:"reference"`
	Store                  string  `json:"store"`
	Platform               string  `json:"platform,omitempty"`
	PlainHTTP              any     `json:"plain_http,omitempty"`
	Username               *string `json:"username,omitempty"`
	Password               *string `json:"password,omitempty"`
	Token                  *string `json:"token,omitempty"`
	MaxConcurrentDownloads *int    `json:"max_concurrent_downloads,omitempty"`
	MaxAttempts            *int    `json:"max_attempts,omitempty"`
	VerifyDiffIDs          *bool   `json:"verify_diff_ids,omitempty"`
	Priority               *int    `json:"priority,omitempty"`
	LowSpeedLimit          *uint64 `json:"low_speed_limit,omitempty"`
	LowSpeedTimeSecs       *int64  `json:"low_speed_time_secs,omitempty"`
	PartialMaxAgeSecs      *int64  `json:"partial_max_age_secs,omitempty"`
	PartialMaxBytes        *uint64 `json:"partial_max_bytes,omitempty"`
}

func seconds(d time.Duration) *int64 {
	if d == 0 {
		return nil
	}
	s := int64(d / time.Second)
	return &s
}

func optional[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// json encodes the options for vic_pull_start. Range and consistency
// checks are the library's, so its messages reach the caller unchanged.
func (o *Options) json() ([]byte, error) {
	w := wire{
		Reference:              o.Reference,
		Store:                  o.Store,
		Platform:               o.Platform,
		Username:               optional(o.Username),
		Password:               optional(o.Password),
		Token:                  optional(o.Token),
		MaxConcurrentDownloads: optional(o.MaxConcurrentDownloads),
		MaxAttempts:            optional(o.MaxAttempts),
		Priority:               optional(o.Priority),
		LowSpeedLimit:          optional(o.LowSpeedLimit),
		LowSpeedTimeSecs:       seconds(o.LowSpeedTime),
		PartialMaxAgeSecs:      seconds(o.PartialMaxAge),
		PartialMaxBytes:        optional(o.PartialMaxBytes),
	}
	if o.PlainHTTP {
		w.PlainHTTP = true
	} else if len(o.PlainHTTPHosts) > 0 {
		w.PlainHTTP = o.PlainHTTPHosts
	}
	if o.SkipDiffIDCheck {
		f := false
		w.VerifyDiffIDs = &f
	}
	if len(o.Extra) == 0 {
		return json.Marshal(w)
	}
	named, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	all := map[string]any{}
	if err := json.Unmarshal(named, &all); err != nil {
		return nil, err
	}
	for k, v := range o.Extra {
		if _, dup := all[k]; dup {
			return nil, fmt.Errorf("options: %s is set both by a field and in Extra", k)
		}
		all[k] = v
	}
	return json.Marshal(all)
}
