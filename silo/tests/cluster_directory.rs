//! The grain directory: first-wins registration, view fencing, view changes, hand-off, cache.

mod cluster_harness;

use cluster_harness::{CallOutcome, Cluster, grain};
use silica_silo::cluster::{
    ActivationAddress, ActivationId, DirectoryCache, DirectoryError, DirectoryRetry,
    MembershipConfig, Registration, TableVersion,
};

// Finds a grain whose owner in silo 0's view is silo `owner`.
fn grain_owned_by(c: &Cluster, owner: usize) -> silica_grains::GrainId {
    let ring = c.silos[0].partition.ring();
    (0..10_000)
        .map(grain)
        .find(|g| ring.owner(g) == Some(c.silos[owner].address))
        .expect("some grain maps to every silo")
}

fn act(c: &Cluster, silo: usize, id: u64) -> ActivationAddress {
    ActivationAddress::new(c.silos[silo].address, ActivationId(id))
}

// Pins first-wins: the second registration of a grain gets the first one's address back and
// changes nothing.
#[test]
fn register_is_first_wins() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 3);
    let g = grain_owned_by(&c, 1);
    let v = c.silos[1].partition.version();
    let (a, b) = (act(&c, 0, 1), act(&c, 2, 2));
    let p = &mut c.silos[1].partition;
    assert_eq!(p.register(v, g.clone(), a), Ok(Registration::Registered(a)));
    assert_eq!(p.register(v, g.clone(), b), Ok(Registration::Existing(a)));
    assert_eq!(p.lookup(v, &g), Ok(Some(a)));
}

// Pins unregister: only the named activation's entry is removed, so a late unregister of an
// old activation cannot remove its successor's entry.
#[test]
fn unregister_removes_only_the_named_activation() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 2);
    let g = grain_owned_by(&c, 0);
    let v = c.silos[0].partition.version();
    let (old, new) = (act(&c, 1, 1), act(&c, 1, 2));
    let p = &mut c.silos[0].partition;
    p.register(v, g.clone(), new).unwrap();
    assert_eq!(p.unregister(v, &g, old), Ok(false));
    assert_eq!(p.lookup(v, &g), Ok(Some(new)));
    assert_eq!(p.unregister(v, &g, new), Ok(true));
    assert_eq!(p.lookup(v, &g), Ok(None));
}

// Pins the view fence: a request with an older view, a newer view, or for a grain the silo
// does not own is refused with a typed error telling the caller to refresh or retry, and
// registers nothing.
#[test]
fn stale_views_and_wrong_owners_are_refused() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 3);
    let g = grain_owned_by(&c, 1);
    let v = c.silos[1].partition.version();
    let a = act(&c, 0, 1);
    let older = TableVersion(v.0 - 1);
    let p = &mut c.silos[1].partition;
    let stale = p.register(older, g.clone(), a).unwrap_err();
    assert_eq!(
        stale,
        DirectoryError::StaleView {
            request: older,
            partition: v
        }
    );
    assert_eq!(stale.action(), DirectoryRetry::RefreshView);
    let ahead = p.register(v.next(), g.clone(), a).unwrap_err();
    assert_eq!(ahead.action(), DirectoryRetry::Retry);
    assert_eq!(p.lookup(v, &g), Ok(None));
    let other = &mut c.silos[2].partition;
    let not_owner = other.register(v, g.clone(), a).unwrap_err();
    assert_eq!(
        not_owner,
        DirectoryError::NotOwner {
            owner: Some(c.silos[1].address),
            version: v
        }
    );
}

// Pins that a stale owner cannot register: after a join moves a grain to the new silo, the
// old owner (still on the old view) refuses callers on the new view, and once it refreshes it
// refuses the grain as not its own.
#[test]
fn stale_owner_cannot_register_after_ownership_moves() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 2);
    let new = c.start_silo(11_900, 1);
    c.refresh(0);
    let moved = (0..10_000)
        .map(grain)
        .find(|g| c.silos[0].partition.ring().owner(g) == Some(c.silos[new].address))
        .unwrap();
    let v_new = c.silos[0].partition.version();
    // Silo 1 has not read the new view; it owned `moved` before the join only if the old ring
    // said so. Either way it must refuse a caller on the new view.
    let a = act(&c, 0, 7);
    let err = c.silos[1]
        .partition
        .register(v_new, moved.clone(), a)
        .unwrap_err();
    assert!(
        matches!(err, DirectoryError::PartitionBehind { .. }),
        "{err:?}"
    );
    c.refresh(1);
    let err = c.silos[1]
        .partition
        .register(v_new, moved.clone(), a)
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotOwner { .. }), "{err:?}");
}

// Pins that a dead silo's entries are gone after the view change, so its grains re-activate
// on the next call, while other silos' entries survive.
#[test]
fn dead_silos_entries_are_dropped_on_view_change() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 3);
    // Two grains whose entries silo 0 holds: one activated on silo 2 (which dies), one on 1.
    let ring = c.silos[0].partition.ring().clone();
    let mut mine = (0..10_000)
        .map(grain)
        .filter(|g| ring.owner(g) == Some(c.silos[0].address));
    let (on_dead, on_live) = (mine.next().unwrap(), mine.next().unwrap());
    assert!(matches!(c.call(2, &on_dead), CallOutcome::Done(a) if a.silo == c.silos[2].address));
    assert!(matches!(c.call(1, &on_live), CallOutcome::Done(a) if a.silo == c.silos[1].address));
    c.kill(2);
    for _ in 0..c.config.num_missed_probes_limit {
        c.probe_round();
    }
    c.settle();
    let v = c.silos[0].partition.version();
    assert_eq!(c.silos[0].partition.lookup(v, &on_dead), Ok(None));
    assert!(c.silos[0].partition.lookup(v, &on_live).unwrap().is_some());
    // The next call re-activates it on a live silo.
    let CallOutcome::Done(again) = c.call(1, &on_dead) else {
        panic!("call failed")
    };
    assert_eq!(again.silo, c.silos[1].address);
    c.assert_single_activation("after re-activation");
}

// Pins the hand-off: when a join moves ownership, the entries move to the new owner, which
// refuses the moved grains until the hand-off arrived and then answers with the old entry.
#[test]
fn join_hands_entries_to_the_new_owner() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 2);
    let grains: Vec<_> = (0..200).map(grain).collect();
    for g in &grains {
        assert!(matches!(c.call(0, g), CallOutcome::Done(_)));
    }
    let before: Vec<_> = grains.iter().map(|g| c.silos[0].hosted[g]).collect();
    let new = c.start_silo(11_900, 1);
    c.refresh_all();
    let v = c.silos[new].partition.version();
    let moved: Vec<_> = grains
        .iter()
        .filter(|g| c.silos[new].partition.ring().owner(g) == Some(c.silos[new].address))
        .collect();
    assert!(!moved.is_empty());
    let err = c.silos[new].partition.lookup(v, moved[0]).unwrap_err();
    assert_eq!(err, DirectoryError::HandOffPending { version: v });
    c.exchange_handoffs();
    for (g, want) in grains.iter().zip(&before) {
        let owner = c.silos[0].partition.ring().owner(g).unwrap();
        let o = c.silos.iter().position(|s| s.address == owner).unwrap();
        assert_eq!(c.silos[o].partition.lookup(v, g), Ok(Some(*want)), "{g}");
    }
    // Nothing is held twice: the old owner deleted what it handed off.
    let held: usize = c.silos.iter().map(|s| s.partition.entries().count()).sum();
    assert_eq!(held, grains.len());
}

// Pins a hand-off sent in parts: the receiver merges each part as it comes but counts the
// sender as arrived only at the last, so moved grains stay HandOffPending until then, and the
// sender deletes what it handed off only on the last part's acknowledgement.
#[test]
fn a_handoff_in_parts_settles_at_the_last_part() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 2);
    let grains: Vec<_> = (0..200).map(grain).collect();
    for g in &grains {
        assert!(matches!(c.call(0, g), CallOutcome::Done(_)));
    }
    let new = c.start_silo(11_950, 1);
    c.refresh_all();
    let v = c.silos[new].partition.version();
    let to_new = c.silos[new].address;
    let moved: Vec<_> = grains
        .iter()
        .filter(|g| c.silos[new].partition.ring().owner(g) == Some(to_new))
        .cloned()
        .collect();
    assert!(moved.len() > 3, "{} grains moved", moved.len());
    // Silo 1 hands off nothing; silo 0 everything that moved, a few entries a part.
    for handoff in c.silos[1].partition.handoffs(&c.silos[1].hosted) {
        if handoff.to == to_new {
            let ack = c.silos[new].partition.handle_handoff(handoff).unwrap();
            c.silos[1].partition.handle_handoff_ack(&ack);
        }
    }
    let handoff = c.silos[0]
        .partition
        .handoffs(&c.silos[0].hosted)
        .into_iter()
        .find(|h| h.to == to_new)
        .expect("a hand-off to the new silo");
    let parts = handoff.into_parts(300);
    assert!(parts.len() > 2, "{} parts", parts.len());
    let count = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let ack = c.silos[new].partition.handle_handoff(part).unwrap();
        if i + 1 < count {
            assert!(!c.silos[new].partition.is_settled(), "settled at part {i}");
            assert_eq!(
                c.silos[new].partition.lookup(v, &moved[0]),
                Err(DirectoryError::HandOffPending { version: v })
            );
        } else {
            c.silos[0].partition.handle_handoff_ack(&ack);
        }
    }
    assert!(c.silos[new].partition.is_settled());
    for g in &moved {
        let want = c.silos[0].hosted[g];
        assert_eq!(c.silos[new].partition.lookup(v, g), Ok(Some(want)), "{g}");
    }
    let held: usize = c.silos.iter().map(|s| s.partition.entries().count()).sum();
    assert_eq!(held, grains.len(), "the sender deleted what it handed off");
}

// Pins cache invalidation: a forward to a cached address that misses drops that entry only;
// a newer cached answer is kept, and view changes drop entries on dead silos.
#[test]
fn cache_is_invalidated_when_a_forward_misses() {
    let c = Cluster::with_silos(MembershipConfig::default(), 2);
    let g = grain(1);
    let (stale, fresh) = (act(&c, 1, 1), act(&c, 1, 2));
    let mut cache = DirectoryCache::new(16);
    cache.insert(g.clone(), stale);
    assert!(cache.handle_forward_miss(&g, stale));
    assert_eq!(cache.get(&g), None);
    cache.insert(g.clone(), fresh);
    assert!(!cache.handle_forward_miss(&g, stale));
    assert_eq!(cache.get(&g), Some(fresh));
    let mut view = c.table_view();
    view.entries.get_mut(&c.silos[1].address).unwrap().status =
        silica_silo::cluster::SiloStatus::Dead;
    cache.handle_view_change(&view);
    assert!(cache.is_empty());
}

// Pins the harness's call path through a stale cache: a call whose cached activation is gone
// invalidates it and reaches the directory again.
#[test]
fn call_through_a_stale_cache_re_resolves() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 3);
    let g = grain(3);
    let CallOutcome::Done(first) = c.call(0, &g) else {
        panic!()
    };
    assert!(matches!(c.call(1, &g), CallOutcome::Done(a) if a == first));
    assert_eq!(c.silos[1].cache.get(&g), Some(first));
    // The activation is collected and unregistered.
    c.silos[0].hosted.remove(&g);
    let owner = c.silos[0].partition.ring().owner(&g).unwrap();
    let o = c.silos.iter().position(|s| s.address == owner).unwrap();
    let v = c.silos[o].partition.version();
    assert_eq!(c.silos[o].partition.unregister(v, &g, first), Ok(true));
    let CallOutcome::Done(second) = c.call(1, &g) else {
        panic!()
    };
    assert_ne!(second, first);
    assert_eq!(second.silo, c.silos[1].address);
}

// Pins graceful leave: a silo moving to ShuttingDown owns no partition in the next view, hands
// every entry it held to the new owners (the others wait for its hand-off), and the entries
// still name the same activations, so no call sees a gap or a second activation.
#[test]
fn leaving_silo_hands_off_every_entry() {
    let mut c = Cluster::with_silos(MembershipConfig::default(), 3);
    let grains: Vec<_> = (0..120).map(grain).collect();
    for (k, g) in grains.iter().enumerate() {
        assert!(matches!(c.call(k % 3, g), CallOutcome::Done(_)));
    }
    let before: Vec<_> = grains.iter().map(|g| c.call_until_done(0, g)).collect();
    let leaving = 2;
    let now = c.now_ms;
    let silo = &mut c.silos[leaving];
    cluster_harness::ready(silica_silo::cluster::driver::set_status(
        &c.table,
        &mut silo.oracle,
        silica_silo::cluster::SiloStatus::ShuttingDown,
        now,
    ))
    .unwrap();
    c.refresh_all();
    assert!(
        !c.silos[0].partition.is_settled(),
        "waits for the leaving silo's hand-off"
    );
    c.settle();
    assert_eq!(c.silos[leaving].partition.entries().count(), 0);
    for (g, want) in grains.iter().zip(&before) {
        assert_eq!(c.call_until_done(0, g), *want, "{g}");
        assert_eq!(c.call_until_done(1, g), *want, "{g}");
    }
    c.assert_single_activation("after leave");
}
