// Package antfarm is Colony's built-in demo workload: an ant colony
// optimisation solver for the single machine total weighted tardiness
// problem (SMTWTP), the benchmark the RELEASE project scaled to 10,000
// Erlang nodes.
//
// n jobs with processing time p, weight w and due date d must be ordered on
// one machine; a job finishing at C costs w·max(0, C−d) and the total is
// minimised (NP-hard). Instances are generated the OR-Library way (p in
// 1..100, w in 1..10, due dates spread by the tardiness factor TF and the
// relative range RDD).
//
// The solver is an ant colony system (Dorigo & Gambardella 1997) as applied
// to the SMTWTP by den Besten, Stützle & Dorigo (2000): pheromone on
// (position, job) pairs, read with Merkle & Middendorf's summation rule;
// heuristic information from the weighted modified due date rule
// (η = w / max(p, d − t)), which also gives the starting schedule and τ0;
// pseudo-random proportional choice with exploitation q0; local and global
// pheromone updates; and every ant's schedule polished by a pairwise
// interchange local search with incremental cost evaluation. Solve is pure
// and single-threaded: the same seed gives the same run.
//
// Run is the `colony antfarm` command: it prints progress and, every
// second, atomically rewrites the JSON metrics file the workload runner
// names in COLONY_METRICS_FILE (iterations, best_cost, elapsed_seconds, ...),
// so the agent reports the solver's progress like any workload's metrics.
package antfarm
