// Package placement is Colony's pure placement engine: it parses and
// validates deployment specs and turns (nodes, current placements, specs)
// into a plan of instances to start, instances to stop and instances that
// cannot be placed, with the reason per constraint.
//
// Nothing here does I/O, reads a clock or draws random numbers: the same
// input always yields the same plan, so a new Raft leader recomputing a plan
// from the same committed state reaches the same decisions and the same
// instance IDs. See scaling/DESIGN.md (## Placement) for the algorithm.
package placement
