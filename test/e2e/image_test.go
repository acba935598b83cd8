package e2e

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestImageContents: the image is the static binary, the CA bundle and an
// empty /data volume owned by the non-root user it runs as; no node ID.
func TestImageContents(t *testing.T) {
	img := needImage(t)
	cfg := mustDocker(t, "image", "inspect", "--format", "{{.Config.User}}|{{json .Config.Volumes}}|{{json .Config.Entrypoint}}|{{.Size}}", img)
	parts := strings.Split(cfg, "|")
	if len(parts) != 4 || parts[0] != "65532:65532" || !strings.Contains(parts[1], `"/data"`) || parts[2] != `["/colony"]` {
		t.Fatalf("image config %q: want user 65532:65532, volume /data, entrypoint /colony", cfg)
	}
	t.Logf("image %s: %s bytes", img, parts[3])

	name := runID + "-contents"
	mustDocker(t, append(append([]string{"create", "--name", name}, labelArgs()...), img)...)
	t.Cleanup(func() { _, _ = docker(dockerTimeout, "rm", "-f", "-v", name) })
	out, err := docker(dockerTimeout, "export", name)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
	}
	for _, want := range []string{"colony", "etc/ssl/certs/ca-certificates.crt", "data"} {
		if files[want] == nil {
			t.Errorf("image lacks /%s", want)
		}
	}
	if h := files["data"]; h != nil && (h.Uid != 65532 || h.Gid != 65532) {
		t.Errorf("/data is owned by %d:%d, want 65532:65532 (the agent could not write its node ID)", h.Uid, h.Gid)
	}
	for f := range files {
		if strings.HasPrefix(f, "data/") {
			t.Errorf("the image carries %s: a data dir must never be baked into an image", f)
		}
	}
}

// TestClonedDataDir: an image that wrongly carries a data dir gives every
// container the same node ID. The first container runs; the second refuses
// to join it with the documented message and exits non-zero, and the first
// never lists it.
func TestClonedDataDir(t *testing.T) {
	img := needImage(t)
	// The bad image: ours plus a node-id in /data, as if someone ran the
	// agent while building the image and kept its state.
	dir := t.TempDir()
	id := uuid.NewString()
	if err := os.WriteFile(filepath.Join(dir, "node-id"), []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dockerfile := fmt.Sprintf("FROM %s\nCOPY --chown=65532:65532 node-id /data/node-id\n", img)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := img + "-baked-id"
	mustDocker(t, append(append([]string{"build", "-q", "-t", bad}, labelArgs()...), dir)...)
	t.Cleanup(func() { _, _ = docker(dockerTimeout, "rmi", "-f", bad) })

	c := NewCluster(t, "clone")
	c.image = bad
	first := c.Run("n1", 1)
	second := c.Run("n2", 2, "--join", "n1")
	code, logs := c.Exit(second, time.Minute)
	if code == 0 {
		t.Fatalf("the clone exited 0; want a refusal:\n%s", logs)
	}
	for _, want := range []string{"refusing to start", "node ID already in use", `node "n1"`, id, "/data/node-id", "never bake a data dir into an image"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the clone's message lacks %q:\n%s", want, logs)
		}
	}
	c.Converge("clone refused", []*Node{first}, map[string]string{"n1": "alive"})
}

// TestJoinNeverAnswers: --join to an address where nothing listens retries
// with backoff, then the agent exits non-zero saying so.
func TestJoinNeverAnswers(t *testing.T) {
	c := NewCluster(t, "nojoin")
	// An address in the cluster's own subnet that no container has.
	n := c.Run("n1", 1, "--join", c.IP(99)+":7946", "--retry-max", "3", "--retry-interval", "200ms")
	code, logs := c.Exit(n, 2*time.Minute)
	if code == 0 {
		t.Fatalf("exit code 0 with an unreachable join address:\n%s", logs)
	}
	for _, want := range []string{"could not join the cluster", c.IP(99), "after 3 attempts"} {
		if !strings.Contains(logs, want) {
			t.Errorf("exit message lacks %q:\n%s", want, logs)
		}
	}
}

// TestMultiNIC: a container on two networks has two private IPs. Without
// --advertise the agent refuses to guess; with a go-sockaddr template that
// picks the cluster's subnet it joins and is reached at that address.
func TestMultiNIC(t *testing.T) {
	// A second network (storage, management...), made first so that its
	// cleanup runs after the containers attached to it are gone.
	other := NewCluster(t, "nic2")
	c := NewCluster(t, "nic")
	seed := c.Run("n1", 1)

	twoNICs := func(name string, i int, env ...string) *Node {
		var dockerArgs []string
		for _, e := range env {
			dockerArgs = append(dockerArgs, "--env", e)
		}
		n := c.Create(name, i, dockerArgs, "agent", "--gossip-profile", "local", "--join", "n1")
		mustDocker(t, "network", "connect", "--ip", other.IP(i), other.Net, n.Container)
		mustDocker(t, "start", n.Container)
		return n
	}

	guess := twoNICs("n2", 2)
	code, logs := c.Exit(guess, time.Minute)
	if code == 0 || !strings.Contains(logs, "several private addresses") || !strings.Contains(logs, c.IP(2)) || !strings.Contains(logs, other.IP(2)) {
		t.Fatalf("with two NICs and no --advertise: exit %d, want a refusal naming both addresses:\n%s", code, logs)
	}

	tmpl := fmt.Sprintf(`COLONY_ADVERTISE={{ GetPrivateInterfaces | include "network" "%s" | attr "address" }}`, c.Subnet)
	n3 := twoNICs("n3", 3, tmpl)
	c.Converge("two NICs, template", []*Node{seed, n3}, map[string]string{"n1": "alive", "n3": "alive"})
	ms, err := c.Members(seed)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ms["n3"].Address, c.IP(3)+":7946"; got != want {
		t.Fatalf("n3 advertises %s, want %s (its address on the cluster network)", got, want)
	}
}
