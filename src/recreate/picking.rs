//! Which of a pod's CRRs the daemon works on (§4.4 step 2). All CRRs of one pod share a work
//! item and are served one at a time: the picked one goes to `Recreating`, every other one
//! that has no phase yet is marked `Pending` so the manager sees that the daemon answered
//! (§4.3 step 3, §10 item 24).

use std::cmp::Ordering;
use std::time::Instant;

use super::expectations::{Expectation, MAX_EXPECTATION_WAIT, WriteExpectations};
use super::version::CrrView;
use crate::api::ContainerRecreateRequestPhase;

/// The outcome of picking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pick<'a> {
    /// The CRR to work on, if any.
    pub picked: Option<&'a CrrView>,
    /// CRRs with an empty phase to set to `Pending`, in order. Kruise writes them one by one
    /// during the pass and stops the sync at the first failure.
    pub mark_pending: Vec<&'a CrrView>,
    /// The CRR whose pending write expectation stopped the pass, if one did (the caller may
    /// requeue to look again).
    pub waiting_for_cache: Option<&'a CrrView>,
}

/// Kruise's phase weight: Completed(1) < Recreating(2) < Pending(3) < anything else,
/// the empty phase included (4).
pub fn phase_weight(phase: &str) -> u8 {
    match phase.parse() {
        Ok(ContainerRecreateRequestPhase::Completed) => 1,
        Ok(ContainerRecreateRequestPhase::Recreating) => 2,
        Ok(ContainerRecreateRequestPhase::Pending) => 3,
        _ => 4,
    }
}

/// The picking order: phase weight, then older `creationTimestamp` (absent first, as Go's
/// zero time), then name. Go's `sort.Sort` leaves ties in an unspecified order; the name
/// makes ours deterministic.
pub fn picking_order(a: &CrrView, b: &CrrView) -> Ordering {
    phase_weight(&a.phase)
        .cmp(&phase_weight(&b.phase))
        .then_with(|| a.creation_timestamp.cmp(&b.creation_timestamp))
        .then_with(|| a.name.cmp(&b.name))
}

/// Picks the CRR to work on among one pod's CRRs (§4.4 step 2).
///
/// In [`picking_order`], skipping deleting and completed CRRs (and forgetting their
/// expectations): a CRR whose cache is behind our last write for less than
/// [`MAX_EXPECTATION_WAIT`] stops the pass, nothing after it is picked or marked this round;
/// one behind for longer is acted on anyway (expectation dropped). The first eligible CRR is
/// picked; every later one with an empty phase is to be marked `Pending`.
pub fn pick<'a>(
    crrs: &'a [CrrView],
    expectations: &mut impl WriteExpectations,
    now: Instant,
) -> Pick<'a> {
    let mut sorted: Vec<&CrrView> = crrs.iter().collect();
    sorted.sort_by(|a, b| picking_order(a, b));
    let mut pick = Pick::default();
    for crr in sorted {
        // Kruise tests `completionTime`; a `Completed` phase without it (never written by
        // kruise) is skipped too rather than being driven back to Recreating.
        if crr.deleting || crr.is_completed() {
            expectations.forget(crr);
            continue;
        }
        if let Expectation::Unsatisfied { waited } = expectations.check(crr, now) {
            if waited < MAX_EXPECTATION_WAIT {
                pick.waiting_for_cache = Some(crr);
                break;
            }
            tracing::info!(
                namespace = %crr.namespace,
                name = %crr.name,
                ?waited,
                "gave up waiting for the CRR cache to reach our last write"
            );
            expectations.forget(crr);
        }
        if pick.picked.is_none() {
            pick.picked = Some(crr);
        } else if crr.phase.is_empty() {
            pick.mark_pending.push(crr);
        }
    }
    pick
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recreate::expectations::ResourceVersionExpectations;
    use crate::recreate::testing::{crr_named, timestamp};

    fn satisfied(_: &CrrView) -> Expectation {
        Expectation::Satisfied
    }

    fn names(crrs: &[&CrrView]) -> Vec<String> {
        crrs.iter().map(|crr| crr.name.clone()).collect()
    }

    #[test]
    fn the_recreating_crr_is_served_before_older_pending_and_new_ones() {
        let crrs = vec![
            crr_named("new", "", "2024-01-01T00:00:03Z"),
            crr_named("waiting", "Pending", "2024-01-01T00:00:01Z"),
            crr_named("working", "Recreating", "2024-01-01T00:00:02Z"),
            crr_named("newer", "", "2024-01-01T00:00:04Z"),
        ];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "working");
        // Only CRRs with no phase yet are marked; `waiting` already is Pending.
        assert_eq!(names(&pick.mark_pending), ["new", "newer"]);
        assert!(pick.waiting_for_cache.is_none());
    }

    #[test]
    fn two_crrs_on_one_pod_the_older_goes_first_and_the_other_waits_pending() {
        let crrs = vec![
            crr_named("second", "", "2024-01-01T00:00:02Z"),
            crr_named("first", "", "2024-01-01T00:00:01Z"),
        ];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "first");
        assert_eq!(names(&pick.mark_pending), ["second"]);
    }

    #[test]
    fn a_completed_crr_is_skipped_and_the_next_one_picked() {
        let mut done = crr_named("done", "Completed", "2024-01-01T00:00:01Z");
        done.completion_time = Some(timestamp("2024-01-01T00:00:09Z"));
        let crrs = vec![done, crr_named("next", "", "2024-01-01T00:00:02Z")];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "next");
        assert!(pick.mark_pending.is_empty());
    }

    #[test]
    fn deleting_and_completion_time_without_phase_are_skipped() {
        let mut deleting = crr_named("deleting", "Recreating", "2024-01-01T00:00:01Z");
        deleting.deleting = true;
        let mut finished = crr_named("finished", "Recreating", "2024-01-01T00:00:02Z");
        finished.completion_time = Some(timestamp("2024-01-01T00:00:09Z"));
        let crrs = vec![deleting, finished];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert!(pick.picked.is_none());
    }

    #[test]
    fn phase_weight_goes_before_age_a_newer_pending_crr_beats_an_older_new_one() {
        let crrs = vec![
            crr_named("older-new", "", "2024-01-01T00:00:01Z"),
            crr_named("newer-pending", "Pending", "2024-01-01T00:00:05Z"),
            crr_named("oldest-pending", "Pending", "2024-01-01T00:00:03Z"),
        ];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "oldest-pending");
        assert_eq!(names(&pick.mark_pending), ["older-new"]);
    }

    #[test]
    fn a_crr_without_creation_time_sorts_first_like_gos_zero_time() {
        let mut timeless = crr_named("timeless", "", "2024-01-01T00:00:09Z");
        timeless.creation_timestamp = None;
        let crrs = vec![crr_named("dated", "", "2024-01-01T00:00:01Z"), timeless];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "timeless");
        assert_eq!(names(&pick.mark_pending), ["dated"]);
    }

    #[test]
    fn the_order_does_not_depend_on_the_input_order() {
        let crrs = [
            crr_named("c", "", "2024-01-01T00:00:02Z"),
            crr_named("b", "Pending", "2024-01-01T00:00:02Z"),
            crr_named("a", "Pending", "2024-01-01T00:00:02Z"),
            crr_named("d", "Recreating", "2024-01-01T00:00:03Z"),
        ];
        let mut sorted: Vec<&CrrView> = crrs.iter().collect();
        sorted.sort_by(|x, y| picking_order(x, y));
        let expected: Vec<String> = sorted.iter().map(|crr| crr.name.clone()).collect();
        assert_eq!(expected, ["d", "a", "b", "c"]);
        let mut reversed: Vec<&CrrView> = crrs.iter().rev().collect();
        reversed.sort_by(|x, y| picking_order(x, y));
        assert_eq!(names(&reversed), expected);
    }

    #[test]
    fn equal_creation_times_are_ordered_by_name() {
        let crrs = vec![
            crr_named("b", "", "2024-01-01T00:00:01Z"),
            crr_named("a", "", "2024-01-01T00:00:01Z"),
            crr_named("c", "", "2024-01-01T00:00:01Z"),
        ];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "a");
        assert_eq!(names(&pick.mark_pending), ["b", "c"]);
    }

    #[test]
    fn unknown_phases_weigh_like_the_empty_phase_but_are_not_marked_pending() {
        assert_eq!(phase_weight("Completed"), 1);
        assert_eq!(phase_weight("Recreating"), 2);
        assert_eq!(phase_weight("Pending"), 3);
        assert_eq!(phase_weight(""), 4);
        assert_eq!(phase_weight("Succeeded"), 4);
        let crrs = vec![
            crr_named("odd", "Restarting", "2024-01-01T00:00:01Z"),
            crr_named("fresh", "", "2024-01-01T00:00:02Z"),
            crr_named("odd-later", "Restarting", "2024-01-01T00:00:03Z"),
        ];
        let pick = pick(&crrs, &mut satisfied, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "odd");
        assert_eq!(names(&pick.mark_pending), ["fresh"]);
    }

    #[test]
    fn a_stale_cache_stops_the_pass_for_up_to_ten_seconds() {
        let crrs = vec![
            crr_named("first", "Recreating", "2024-01-01T00:00:01Z"),
            crr_named("second", "", "2024-01-01T00:00:02Z"),
        ];
        let mut expectations = ResourceVersionExpectations::new();
        expectations.expect(&crrs[0].uid, "100");
        let start = Instant::now();

        let waiting = pick(&crrs, &mut expectations, start);
        assert!(waiting.picked.is_none());
        assert!(waiting.mark_pending.is_empty());
        assert_eq!(waiting.waiting_for_cache.unwrap().name, "first");

        let still_waiting = pick(&crrs, &mut expectations, start + Duration::from_secs(9));
        assert!(still_waiting.picked.is_none());

        let gave_up = pick(&crrs, &mut expectations, start + Duration::from_secs(10));
        assert_eq!(gave_up.picked.unwrap().name, "first");
        assert_eq!(names(&gave_up.mark_pending), ["second"]);
        assert!(!expectations.is_expecting(&crrs[0].uid));
    }

    #[test]
    fn a_stale_later_crr_keeps_the_earlier_pick() {
        let crrs = vec![
            crr_named("first", "Recreating", "2024-01-01T00:00:01Z"),
            crr_named("second", "", "2024-01-01T00:00:02Z"),
            crr_named("third", "", "2024-01-01T00:00:03Z"),
        ];
        let stale = crrs[1].uid.clone();
        let mut expectations = move |crr: &CrrView| {
            if crr.uid == stale {
                Expectation::Unsatisfied {
                    waited: Duration::from_secs(1),
                }
            } else {
                Expectation::Satisfied
            }
        };
        let pick = pick(&crrs, &mut expectations, Instant::now());
        assert_eq!(pick.picked.unwrap().name, "first");
        assert!(pick.mark_pending.is_empty());
        assert_eq!(pick.waiting_for_cache.unwrap().name, "second");
    }
}
