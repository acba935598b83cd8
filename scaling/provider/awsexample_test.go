package provider

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The EC2 example cannot reach a cloud here; this runs it against a stub
// `aws` CLI (testdata/awsstub) to check its protocol plumbing: JSON shapes,
// tags and ClientToken idempotency, and exit codes.
func TestAWSExampleAgainstStubCLI(t *testing.T) {
	ctx := testCtx(t)
	stubDir, _ := filepath.Abs("testdata/awsstub")
	p, _ := fakeCloud(t, func(c *ExecConfig) {
		c.Command, _ = filepath.Abs("../../examples/exec-provider/aws-ec2.sh")
		c.Env = []string{
			"PATH=" + stubDir + string(os.PathListSeparator) + os.Getenv("PATH"),
			"AWS_STUB_STATE=" + filepath.Join(t.TempDir(), "ec2.json"),
			"EC2_AMI=ami-1", "EC2_SUBNET=subnet-1", "EC2_SECURITY_GROUPS=sg-1 sg-2", "COLONY_POOL=test",
		}
	})
	types, err := p.InstanceTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gpu, err := ChooseType(types, Requirements{Labels: map[string]string{"gpu": "true"}})
	if err != nil || gpu.Name != "g6.xlarge" {
		t.Fatalf("gpu: %q, %v", gpu.Name, err)
	}
	if plain, _ := ChooseType(types, Requirements{CPUMillis: 2000, MemoryMiB: 6000}); plain.Name != "m7g.large" {
		t.Fatalf("plain: %q", plain.Name)
	}
	req := LaunchRequest{IdempotencyKey: "intent-7", Type: "t3.medium", Count: 2, JoinAddr: "10.1.0.100:7946", Labels: map[string]string{"pool": "web", "note": "it's"}}
	insts, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 || insts[1].Index != 1 || insts[0].Labels["note"] != "it's" || insts[0].State != StatePending || insts[0].Addr == "" {
		t.Fatalf("launch: %+v", insts)
	}
	if again, err := p.Launch(ctx, req); err != nil || len(again) != 2 || again[0].ID != insts[0].ID {
		t.Fatalf("repeat: %+v, %v", again, err)
	}
	// The script itself is idempotent too: a raw repeat of slot 0 (a launch
	// in flight when the leader died) returns the instance EC2 already has.
	var resp execInstancesResponse
	if err := p.run(ctx, "launch", execLaunchRequest{Version: 1, IdempotencyKey: "intent-7", Type: "t3.medium", Count: 2, Indexes: []int{0}, Labels: req.Labels}, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Instances) != 1 || resp.Instances[0].ID != insts[0].ID {
		t.Fatalf("ClientToken repeat: %+v", resp.Instances)
	}
	if err := p.Terminate(ctx, []string{insts[0].ID, "i-404"}); err != nil {
		t.Fatal(err)
	}
	all, err := p.List(ctx)
	if err != nil || len(all) != 2 || all[0].State != StateTerminated {
		t.Fatalf("list: %+v, %v", all, err)
	}
	if _, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "x1.huge", Count: 1}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}

	for code, want := range map[string]error{"RequestLimitExceeded": ErrTransient, "InsufficientInstanceCapacity": ErrCapacity} {
		p.cfg.Env = append(p.cfg.Env, "AWS_STUB_ERROR="+code)
		if _, err := p.List(ctx); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", code, err, want)
		}
		p.cfg.Env = p.cfg.Env[:len(p.cfg.Env)-1]
	}
}
