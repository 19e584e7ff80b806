package vicpull

import "fmt"

// ProgressKind is what a progress event reports (vic_progress_kind).
type ProgressKind uint32

// The progress kinds of include/vicpull.h (VIC_PROGRESS_KIND_*).
const (
	PullingFrom       ProgressKind = 0
	PullingFSLayer    ProgressKind = 1
	Waiting           ProgressKind = 2
	Downloading       ProgressKind = 3
	VerifyingChecksum ProgressKind = 4
	DownloadComplete  ProgressKind = 5
	PullComplete      ProgressKind = 6
	AlreadyExists     ProgressKind = 7
	Retrying          ProgressKind = 8
	DigestKind        ProgressKind = 9
	StatusKind        ProgressKind = 10
)

var kindNames = [...]string{
	"PULLING_FROM", "PULLING_FS_LAYER", "WAITING", "DOWNLOADING",
	"VERIFYING_CHECKSUM", "DOWNLOAD_COMPLETE", "PULL_COMPLETE",
	"ALREADY_EXISTS", "RETRYING", "DIGEST", "STATUS",
}

func (k ProgressKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("ProgressKind(%d)", uint32(k))
}

// Progress is one progress event, copied out of the library.
type Progress struct {
	// Layer is the layer digest, or "" for image-level messages.
	Layer string
	Kind  ProgressKind
	// Current is bytes so far for Downloading, the attempt for Retrying.
	Current uint64
	// Total is the layer size for Downloading and PullingFSLayer.
	Total uint64
	// Message is Docker's wording, e.g. "Pull complete".
	Message string
}

// Layer is one layer of a pulled image, in manifest order.
type Layer struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diff_id"`
	Size      uint64 `json:"size"`
	MediaType string `json:"media_type"`
}

// Result describes a finished, successful pull (the library's result JSON).
type Result struct {
	Reference string `json:"reference"`
	// Digest is what the reference resolved to: the index digest for a
	// multi-platform image.
	Digest            string `json:"digest"`
	ManifestDigest    string `json:"manifest_digest"`
	ManifestMediaType string `json:"manifest_media_type"`
	// StoredManifestDigest is the manifest index.json points at (the OCI
	// rewrite of a Docker schema2 manifest).
	StoredManifestDigest string  `json:"stored_manifest_digest"`
	ConfigDigest         string  `json:"config_digest"`
	Platform             string  `json:"platform"`
	Store                string  `json:"store"`
	Layers               []Layer `json:"layers"`
	BytesDownloaded      uint64  `json:"bytes_downloaded"`
	UpToDate             bool    `json:"up_to_date"`

	// JSON is the library's result JSON as it came.
	JSON []byte `json:"-"`
}

// State is where a pull stands (vic_pull_state).
type State uint32

// Pull states.
const (
	StatePending   State = 0
	StateDone      State = 1
	StateFailed    State = 2
	StateCancelled State = 3
)

// Status is a snapshot of a pull's state and counters.
type Status struct {
	State State
	// Result is CodePending while running, the final code once finished.
	Result      Code
	LayersTotal uint32
	LayersDone  uint32
	BytesTotal  uint64
	BytesDone   uint64
}
