// Package workload is the node side of Colony's placements: the exec driver
// that runs the instances the leader assigned to this node.
//
// A Runner owns one supervisor goroutine per instance. Reconcile hands it the
// full desired set (level-triggered, so calling it again with the same set is
// a no-op): missing instances are started, instances no longer desired are
// stopped, and an instance whose assignment changed is stopped and started
// again with the new one. Reconcile never blocks on a process; the
// supervisors do the slow parts (grace periods, backoff) and publish their
// state, which Status reads.
//
// Each instance runs in its own process group, so stopping it (SIGTERM to the
// group, SIGKILL after Config.StopTimeout) also stops whatever it forked, and
// when the main process exits on its own the rest of its group is killed
// before a restart, so two copies never run at once. The child does not
// inherit the agent's environment (which may hold the gossip key): it gets
// Config.BaseEnv, the assignment's Env and COLONY_INSTANCE_ID,
// COLONY_DEPLOYMENT and COLONY_METRICS_FILE.
//
// Restarts follow the assignment's policy (always, on-failure, never) with an
// exponential backoff from BackoffInitial doubling up to BackoffMax. A run
// that lasts Config.ResetAfter resets the backoff and the count of
// consecutive restarts; when that count would exceed MaxRestarts the
// instance becomes failed and stays stopped until its assignment changes.
//
// Output goes through pipes to DATA_DIR/workloads/<instance>/stdout.log and
// stderr.log, each rotated to a single .1 file at Config.LogMaxBytes, so an
// instance keeps at most about 2×LogMaxBytes per stream on disk however
// much it prints; the pipes are always drained so a chatty workload never
// blocks on a full disk.
//
// Metrics: a workload may atomically replace the JSON file named by
// COLONY_METRICS_FILE with an object of at most MaxMetrics numbers whose names
// match [a-z0-9_]+; Status re-reads it when it changed. Anything else is
// ignored and counted (InstanceStatus.MetricsRejected), never fatal.
//
// Instances do not survive an agent restart. The runner records every live
// process group in DATA_DIR/workloads/pids.json; New kills the groups a
// previous run left behind (checked against the boot ID and the
// COLONY_INSTANCE_ID in each process's environment, so a recycled PID is
// never hit) before anything starts again, and Shutdown stops everything it
// started. One Runner per data dir: the agent's data-dir lock guarantees it.
package workload
