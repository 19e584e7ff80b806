package vicpull

// The test harness: a real registry started with the testkit binary
// (VICPULL_TESTKIT, default ../../target/release/testkit), images seeded
// into it, and a throttling TCP proxy in front of it, all on 127.0.0.1.

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fixture is shared by all tests of the package.
var fixture struct {
	registry  string // 127.0.0.1:PORT of the registry
	slow      string // the throttling proxy in front of it
	app       string // "go/app:1": two layers of real files
	appDigest string
	big       string // "go/big:1": two 16 MiB layers, pulled through slow
}

func TestMain(m *testing.M) {
	code, err := runWithRegistry(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vicpull tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func testkit() string {
	if p := os.Getenv("VICPULL_TESTKIT"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../target/release/testkit")
	return p
}

func runWithRegistry(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "vicpull-go-registry")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(testkit(), "registry", "--dir", dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf(
			"start %s (build it with cargo build --release -p vicpull-testkit): %w",
			testkit(), err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("registry did not print its address: %w", err)
	}
	fixture.registry = strings.TrimSpace(line)

	fixture.appDigest, err = seed("seed", "--repo", "go/app", "--tag", "1",
		"--from", "/etc", "--from", "/usr/share/doc", "--layer-bytes", "1M")
	if err != nil {
		return 0, err
	}
	fixture.app = fixture.registry + "/go/app:1"
	if _, err := seed("bench-image", "--repo", "go/big", "--tag", "1", "--seed", "5",
		"--layers", "2", "--layer-bytes", "16M"); err != nil {
		return 0, err
	}
	slow, stop, err := throttle(fixture.registry, 1<<20)
	if err != nil {
		return 0, err
	}
	defer stop()
	fixture.slow = slow
	fixture.big = slow + "/go/big:1"
	return m.Run(), nil
}

func seed(cmd string, args ...string) (string, error) {
	args = append([]string{cmd, "--registry", fixture.registry}, args...)
	out, err := exec.Command(testkit(), args...).Output()
	if err != nil {
		return "", fmt.Errorf("testkit %v: %w", args, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// throttle forwards 127.0.0.1 connections to target, passing at most
// rate bytes per second per connection from the server back.
func throttle(target string, rate int) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go proxyConn(c, target, rate)
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }, nil
}

func proxyConn(client net.Conn, target string, rate int) {
	defer client.Close()
	server, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer server.Close()
	go func() {
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	const chunk = 16 << 10
	buf := make([]byte, chunk)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
			time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
		}
		if err != nil {
			return
		}
	}
}

// ingestLeftovers lists temp and lock files a pull left in the store; a
// "<hex>.partial" is kept on purpose, for the next pull to resume from.
func ingestLeftovers(t *testing.T, store string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(store, ".vicpull", "ingest"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".partial") {
			names = append(names, e.Name())
		}
	}
	return names
}

// checkBlobs asserts every blob of the store hashes to its own name.
func checkBlobs(t *testing.T, store string) int {
	t.Helper()
	dir := filepath.Join(store, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != e.Name() {
			t.Errorf("blob %s hashes to %s", e.Name(), got)
		}
	}
	return len(entries)
}
