//! The step DAG: references, cycles, value kinds, sinks, topological order.
//!
//! All of it is checked before anything runs, so the engine can evaluate
//! `Recipe::steps` front to back with every input already computed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::diagnostic::{known_hint, Loc, Problem};
use super::params::{op_name, signature};
use super::raw::Sp;
use super::{Kind, Step};
use crate::ops::{Operator, ValueKind};

/// A step after parameter typing, before graph checks.
pub(crate) struct Draft {
    pub id: Sp<String>,
    /// Location of `op = ...` (or of the step header if missing).
    pub op_loc: Loc,
    /// None if the operator had errors (already reported).
    pub op: Option<Operator>,
    /// None if the input list had errors (already reported).
    pub inputs: Option<Vec<Sp<String>>>,
}

fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Bytes => "the source file's bytes",
        ValueKind::Image => "an image",
        ValueKind::Encoded => "encoded JPEG bytes",
        ValueKind::Region => "a slide region (what a WSI step without `input` reads)",
        ValueKind::Tiles => "tiles",
        ValueKind::EncodedTiles => "encoded tiles",
    }
}

/// Checks the graph; returns the steps in a stable topological order (the
/// declaration order wherever the edges allow it) and the sink indices, or
/// None when a problem was reported.
pub(crate) fn build(
    drafts: &[Draft],
    kind: Kind,
    p: &mut Vec<Problem>,
) -> Option<(Vec<Step>, Vec<usize>)> {
    let before = p.len();
    let ids: Vec<&str> = drafts.iter().map(|d| d.id.v.as_str()).collect();
    let resolved = resolve_inputs(drafts, &ids, p);
    let (graph, nodes) = step_graph(&resolved);
    if report_cycles(drafts, &ids, &graph, &nodes, p) {
        return None;
    }
    check_value_kinds(drafts, &resolved, kind, p);
    let consumed: Vec<bool> = nodes
        .iter()
        .map(|&n| {
            graph
                .neighbors_directed(n, petgraph::Direction::Outgoing)
                .next()
                .is_some()
        })
        .collect();
    // Sinks are only meaningful when the edges are right: a wrong or missing
    // `input` leaves its intended producer unconsumed, which is not a second
    // mistake.
    let edges_ok = p.len() == before
        && resolved.iter().all(Option::is_some)
        && drafts.iter().all(|d| d.op.is_some());
    if edges_ok {
        check_sinks(drafts, &consumed, p);
    }
    if p.len() > before || drafts.iter().any(|d| d.op.is_none()) {
        return None;
    }
    let order = stable_toposort(&graph, &nodes);
    if kind == Kind::Wsi && !tile_sizes_ok(drafts, &resolved, &order, &consumed, p) {
        return None;
    }
    in_order(drafts, &resolved, &order, &consumed)
}

/// Each step's inputs as step indices; `None` for a step whose input list
/// had errors or names an unknown step (reported here, with the known ids).
fn resolve_inputs(drafts: &[Draft], ids: &[&str], p: &mut Vec<Problem>) -> Vec<Option<Vec<usize>>> {
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut resolved: Vec<Option<Vec<usize>>> = Vec::with_capacity(drafts.len());
    for d in drafts {
        let Some(refs) = &d.inputs else {
            resolved.push(None);
            continue;
        };
        let mut out = Vec::new();
        for r in refs {
            match index.get(r.v.as_str()) {
                Some(&j) => out.push(j),
                None => p.push(
                    Problem::at(
                        &r.loc,
                        format!("unknown input `{}` of step `{}`", r.v, d.id.v),
                    )
                    .hint(known_hint(&r.v, "step ids", ids)),
                ),
            }
        }
        resolved.push((out.len() == refs.len()).then_some(out));
    }
    resolved
}

/// The graph of the resolved inputs: a node per step, an edge from each
/// input to the step that reads it.
fn step_graph(resolved: &[Option<Vec<usize>>]) -> (DiGraph<usize, ()>, Vec<NodeIndex>) {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..resolved.len()).map(|i| graph.add_node(i)).collect();
    for (i, r) in resolved.iter().enumerate() {
        for &j in r.iter().flatten() {
            graph.update_edge(nodes[j], nodes[i], ());
        }
    }
    (graph, nodes)
}

/// Cycles: one error per strongly connected component; whether there was
/// one. Kahn's order covers every step exactly when there is none; the
/// components are only computed otherwise (iteratively: a chain of
/// thousands of steps must not recurse).
fn report_cycles(
    drafts: &[Draft],
    ids: &[&str],
    graph: &DiGraph<usize, ()>,
    nodes: &[NodeIndex],
    p: &mut Vec<Problem>,
) -> bool {
    let mut cyclic = false;
    let mut sccs = if stable_toposort(graph, nodes).len() == drafts.len() {
        Vec::new()
    } else {
        kosaraju_scc(graph)
    };
    sccs.sort_by_key(|scc| scc.iter().map(|n| graph[*n]).min());
    for scc in sccs {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        cyclic = true;
        let start = scc.iter().map(|n| graph[*n]).min().unwrap_or(0);
        let path = cycle_path(graph, nodes, &scc, start);
        let text: Vec<&str> = path.iter().map(|&i| ids[i]).collect();
        p.push(
            Problem::at(
                &drafts[start].id.loc,
                format!("cycle: {}", text.join(" -> ")),
            )
            .hint("steps form a DAG: a step cannot depend on its own result"),
        );
    }
    cyclic
}

/// Arity and value kinds: each operator takes at most one input, of the kind
/// it needs.
fn check_value_kinds(
    drafts: &[Draft],
    resolved: &[Option<Vec<usize>>],
    kind: Kind,
    p: &mut Vec<Problem>,
) {
    let source = Source {
        kind,
        value: match kind {
            Kind::Roi => ValueKind::Bytes,
            Kind::Wsi => ValueKind::Region,
        },
        decoders: drafts
            .iter()
            .filter(|d| matches!(d.op, Some(Operator::Decode(_) | Operator::WsiGrid(_))))
            .map(|d| d.id.v.as_str())
            .collect(),
    };
    for (i, d) in drafts.iter().enumerate() {
        let (Some(op), Some(ins)) = (&d.op, &resolved[i]) else {
            continue;
        };
        let name = op_name(op);
        if ins.len() > 1 {
            let at = d
                .inputs
                .as_ref()
                .and_then(|v| v.get(1))
                .map_or(&d.op_loc, |s| &s.loc);
            p.push(Problem::at(
                at,
                format!(
                    "operator `{name}` of step `{}` takes one input, {} are given",
                    d.id.v,
                    ins.len()
                ),
            ));
            continue;
        }
        let (want, _) = signature(op);
        let got = match ins.first() {
            None => source.value,
            Some(&j) => match &drafts[j].op {
                Some(o) => signature(o).1,
                None => continue,
            },
        };
        if want != got {
            p.push(source.mismatch(drafts, d, name, ins.first().copied(), want, got));
        }
    }
}

/// What a step without `input` receives — a file's bytes (ROI) or one grid
/// cell of a slide (WSI) — and the steps that could be its input instead.
struct Source<'a> {
    kind: Kind,
    value: ValueKind,
    /// `decode` and `wsi_grid` steps, for the hint.
    decoders: Vec<&'a str>,
}

impl Source<'_> {
    /// The problem of step `d` (operator `name`), which needs `want` but
    /// gets `got` from `input` (a step, or the source when `None`).
    fn mismatch(
        &self,
        drafts: &[Draft],
        d: &Draft,
        name: &str,
        input: Option<usize>,
        want: ValueKind,
        got: ValueKind,
    ) -> Problem {
        let Some(j) = input else {
            let hint = match self.decoders.first() {
                Some(dec) => format!("add `input = \"{dec}\"`"),
                None if self.kind == Kind::Wsi => {
                    "add a `wsi_grid` step and make it the `input`".to_string()
                }
                None => "add a `decode` step and make it the `input`".to_string(),
            };
            return Problem::at(
                &d.op_loc,
                format!(
                    "step `{}` ({name}) needs {} but has no `input`, so it would get {}",
                    d.id.v,
                    kind_name(want),
                    kind_name(self.value)
                ),
            )
            .hint(hint);
        };
        let at = d
            .inputs
            .as_ref()
            .and_then(|v| v.first())
            .map_or(&d.op_loc, |s| &s.loc);
        let pr = Problem::at(
            at,
            format!(
                "step `{}` ({name}) needs {} but its input `{}` produces {}",
                d.id.v,
                kind_name(want),
                drafts[j].id.v,
                kind_name(got)
            ),
        );
        if want == self.value {
            pr.hint("remove `input`: a step without `input` reads the source file")
        } else {
            pr
        }
    }
}

/// Sinks: what nothing consumes is written, so it must be encoded.
fn check_sinks(drafts: &[Draft], consumed: &[bool], p: &mut Vec<Problem>) {
    for (i, d) in drafts.iter().enumerate() {
        if consumed[i] {
            continue;
        }
        if let Some(op) = &d.op {
            if !matches!(
                op.output_kind(),
                ValueKind::Encoded | ValueKind::EncodedTiles
            ) {
                p.push(
                    Problem::at(
                        &d.id.loc,
                        format!(
                            "step `{}` ({}) is a sink (no step uses its result), but only `encode_jpeg` and `encode_tiles` results can be written",
                            d.id.v,
                            op_name(op)
                        ),
                    )
                    .hint("feed it to an `encode_jpeg` (ROI) or `encode_tiles` (WSI) step, or remove it"),
                );
            }
        }
    }
}

/// The checked steps in topological `order`, their inputs renumbered to
/// positions in it, and the sinks' positions, sorted.
fn in_order(
    drafts: &[Draft],
    resolved: &[Option<Vec<usize>>],
    order: &[usize],
    consumed: &[bool],
) -> Option<(Vec<Step>, Vec<usize>)> {
    let mut position = vec![0; drafts.len()];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }
    let mut steps = Vec::with_capacity(drafts.len());
    for &i in order {
        let d = &drafts[i];
        steps.push(Step {
            id: d.id.v.clone(),
            op: d.op.clone()?,
            inputs: resolved[i].iter().flatten().map(|&j| position[j]).collect(),
        });
    }
    let mut sinks: Vec<usize> = (0..drafts.len())
        .filter(|&i| !consumed[i])
        .map(|i| position[i])
        .collect();
    sinks.sort_unstable();
    Some((steps, sinks))
}

/// WSI geometry that can be checked before anything runs: every `subtiles`
/// size divides its parent's, `pick` names an existing child, and no two
/// writers put tiles of one size into one scale folder (they would write the
/// same files).
fn tile_sizes_ok(
    drafts: &[Draft],
    resolved: &[Option<Vec<usize>>],
    order: &[usize],
    consumed: &[bool],
    p: &mut Vec<Problem>,
) -> bool {
    let before = p.len();
    let mut size: Vec<Option<u32>> = vec![None; drafts.len()];
    for &i in order {
        let parent = resolved[i]
            .as_ref()
            .and_then(|ins| ins.first())
            .and_then(|&j| size[j]);
        size[i] = match &drafts[i].op {
            Some(Operator::WsiGrid(g)) => Some(g.size),
            Some(Operator::Subtiles(st)) => {
                if let Some(ps) = parent {
                    if st.size > ps || ps % st.size != 0 {
                        p.push(Problem::at(
                            &drafts[i].op_loc,
                            format!(
                                "step `{}`: tiles of {} px cannot be cut into a grid of {} px tiles",
                                drafts[i].id.v, ps, st.size
                            ),
                        ).hint("the child size must divide the parent size"));
                    } else if let Some(pick) = st.pick {
                        let k = ps / st.size;
                        if pick > k * k {
                            p.push(Problem::at(
                                &drafts[i].op_loc,
                                format!(
                                    "step `{}`: `pick = {pick}` but a {ps} px tile has only {} children of {} px",
                                    drafts[i].id.v,
                                    k * k,
                                    st.size
                                ),
                            ));
                        }
                    }
                }
                Some(st.size)
            }
            _ => parent,
        };
    }
    let mut writers: HashMap<(String, u32), &str> = HashMap::new();
    for (i, d) in drafts.iter().enumerate() {
        if consumed[i] {
            continue;
        }
        if let (Some(Operator::EncodeTiles(e)), Some(sz)) = (&d.op, size[i]) {
            if let Some(other) = writers.insert((e.scale.clone(), sz), d.id.v.as_str()) {
                p.push(Problem::at(
                    &d.op_loc,
                    format!(
                        "steps `{other}` and `{}` both write {sz} px tiles into scale {}: they would write the same files",
                        d.id.v, e.scale
                    ),
                ));
            }
        }
    }
    p.len() == before
}

/// Kahn's algorithm taking the lowest declaration index first.
fn stable_toposort(graph: &DiGraph<usize, ()>, nodes: &[NodeIndex]) -> Vec<usize> {
    let mut indegree: Vec<usize> = nodes
        .iter()
        .map(|n| {
            graph
                .neighbors_directed(*n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for m in graph.neighbors_directed(nodes[i], petgraph::Direction::Outgoing) {
            let j = graph[m];
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order
}

/// A cycle through `start` inside the component, in data-flow direction,
/// ending where it began: `[a, b, a]`.
fn cycle_path(
    graph: &DiGraph<usize, ()>,
    nodes: &[NodeIndex],
    scc: &[NodeIndex],
    start: usize,
) -> Vec<usize> {
    let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    let in_scc = |n: NodeIndex| members.contains(&n);
    // Breadth-first search from `start` back to `start`, inside the component.
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = std::collections::HashSet::from([start]);
    while let Some(i) = queue.pop_front() {
        let mut next: Vec<usize> = graph
            .neighbors_directed(nodes[i], petgraph::Direction::Outgoing)
            .filter(|n| in_scc(*n))
            .map(|n| graph[n])
            .collect();
        next.sort_unstable();
        for j in next {
            if j == start {
                // Walk back from `i` to `start`, then read it forwards.
                let mut back = Vec::new();
                let mut k = i;
                while k != start {
                    back.push(k);
                    k = parent.get(&k).copied().unwrap_or(start);
                }
                back.reverse();
                let mut path = vec![start];
                path.extend(back);
                path.push(start);
                return path;
            }
            if seen.insert(j) {
                parent.insert(j, i);
                queue.push_back(j);
            }
        }
    }
    vec![start, start]
}
