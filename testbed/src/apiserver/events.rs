//! `events.k8s.io/v1` Events are stored as core `v1` Events, as in kube-apiserver; these
//! functions rename the fields between the two shapes.

use serde_json::Value;

/// `(events.k8s.io/v1 name, core v1 name)` for every renamed field.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(mut object: Value, from_index: usize) -> Value {
    if let Some(map) = object.as_object_mut() {
        for pair in RENAMES {
            let (from, to) = if from_index == 0 {
                (pair.0, pair.1)
            } else {
                (pair.1, pair.0)
            };
            if let Some(value) = map.remove(from) {
                map.insert(to.to_string(), value);
            }
        }
    }
    object
}

/// A core Event in the `events.k8s.io/v1` shape.
pub fn core_to_events_v1(object: Value) -> Value {
    rename(object, 1)
}

/// An `events.k8s.io/v1` Event in the core shape.
pub fn events_v1_to_core(object: Value) -> Value {
    rename(object, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_renamed_both_ways_without_loss() {
        let v1 = json!({"regarding": {"kind": "Pod", "name": "p"}, "note": "Stopping container",
                        "reason": "Killing", "reportingController": "kruised", "reportingInstance": "n1",
                        "deprecatedCount": 2});
        let core = events_v1_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "Stopping container");
        assert_eq!(core["reportingComponent"], "kruised");
        assert_eq!(core["count"], 2);
        assert_eq!(core_to_events_v1(core), v1);
    }
}
