package vicpull

import "encoding/json"

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

	// OnProgress, if set, receives every progress event of the pull, in
	// order, one at a time, on a goroutine of this package (never on a
	// library thread). A slow callback delays only later events: the
	// library thread hands each event over and returns at once. A panic in
	// it cancels the pull, and Pull/Wait return a *CallbackPanicError.
	OnProgress func(Progress)
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
	return json.Marshal(w)
}
