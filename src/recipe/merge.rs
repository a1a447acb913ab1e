//! `extends`: a recipe is its template with the recipe's own keys on top.
//!
//! Merging happens on the spanned raw form, before validation, so a template
//! may be partial (no collection name, say) and every value keeps the file
//! it came from: an error in a template's step is reported in the template.

use super::raw::{RawCollection, RawInputs, RawMpp, RawRecipe, RawStep, Slot};

/// `over` applied on top of `base` (its template):
/// - scalar and list keys of `[collection]`, `[inputs]` and `[output]`
///   replace the template's, key by key;
/// - a `route` key (even `route = []`) replaces the template's routes wholesale;
/// - steps merge by `id`: a step with a known id replaces `op` and the input
///   list if it gives them and overrides or adds individual parameters (a
///   changed `op`, or a changed `detector` of `tissue`, drops the template's
///   parameters, which belonged to the other operator); new ids are appended
///   in order.
pub(crate) fn merge(base: RawRecipe, over: RawRecipe) -> RawRecipe {
    let mut steps = base.steps;
    let mut index: std::collections::HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.v.clone(), i))
        .collect();
    for s in over.steps {
        match index.get(&s.id.v) {
            Some(&i) => merge_step(&mut steps[i], s),
            None => {
                index.insert(s.id.v.clone(), steps.len());
                steps.push(s);
            }
        }
    }
    RawRecipe {
        file: over.file,
        extends: over.extends,
        collection: merge_collection(base.collection, over.collection),
        inputs: merge_inputs(base.inputs, over.inputs),
        routes: over.routes.or(base.routes),
        output_name: base.output_name.overridden_by(over.output_name),
        mpp: RawMpp {
            header: over.mpp.header.or(base.mpp.header),
            sources: base.mpp.sources.overridden_by(over.mpp.sources),
            default: base.mpp.default.overridden_by(over.mpp.default),
            overrides: base.mpp.overrides.overridden_by(over.mpp.overrides),
        },
        steps,
        too_many_steps: base.too_many_steps || over.too_many_steps,
    }
}

fn merge_step(b: &mut RawStep, s: RawStep) {
    if let (Some(old), Some(new)) = (b.op.val(), s.op.val()) {
        if old.v != new.v {
            b.params.clear();
        }
    }
    // Another `detector` of `tissue` is another set of parameters, like
    // another operator: the template's do not carry over.
    let detector = |st: &RawStep| {
        st.params
            .iter()
            .find(|p| p.key.v == "detector")
            .map(|p| p.value.v.clone())
    };
    if let (Some(old), Some(new)) = (detector(b), detector(&s)) {
        if old != new {
            b.params.clear();
        }
    }
    b.op = std::mem::replace(&mut b.op, Slot::Absent).overridden_by(s.op);
    b.inputs = std::mem::replace(&mut b.inputs, Slot::Absent).overridden_by(s.inputs);
    for p in s.params {
        match b.params.iter_mut().find(|q| q.key.v == p.key.v) {
            Some(q) => *q = p,
            None => b.params.push(p),
        }
    }
    // Errors about the step as a whole point at the most derived definition.
    b.header = s.header;
    b.id = s.id;
}

fn merge_collection(b: RawCollection, o: RawCollection) -> RawCollection {
    RawCollection {
        header: o.header.or(b.header),
        name: b.name.overridden_by(o.name),
        kind: b.kind.overridden_by(o.kind),
        organs: b.organs.overridden_by(o.organs),
        diseases: b.diseases.overridden_by(o.diseases),
        stain: b.stain.overridden_by(o.stain),
        field: b.field.overridden_by(o.field),
        year: b.year.overridden_by(o.year),
        licence: b.licence.overridden_by(o.licence),
        citation: b.citation.overridden_by(o.citation),
        url: b.url.overridden_by(o.url),
    }
}

fn merge_inputs(b: RawInputs, o: RawInputs) -> RawInputs {
    RawInputs {
        header: o.header.or(b.header),
        source: b.source.overridden_by(o.source),
        include: b.include.overridden_by(o.include),
        exclude: b.exclude.overridden_by(o.exclude),
        suffixes: b.suffixes.overridden_by(o.suffixes),
        hidden: b.hidden.overridden_by(o.hidden),
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
