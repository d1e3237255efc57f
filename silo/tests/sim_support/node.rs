//! One simulated silo as a synchronous state machine around the real cluster state machines
//! (`MembershipOracle`, `DirectoryPartition`): `tick` and `handle` take the time and return the
//! datagrams to send. The async loop in `host.rs` feeds it from a turmoil UDP socket.

use std::collections::BTreeMap;

use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;
use silica_silo::cluster::{
    ActivationAddress, ActivationId, DEFAULT_DIRECTORY_VIRTUAL_NODES, DirectoryPartition, HandOff,
    InMemoryMembershipTable, MembershipConfig, MembershipOracle, SiloStatus, StopReason, driver,
};

use super::wire::{Body, Envelope, RegisterAnswer};
use super::{Rng, ready};

/// A request not answered within this long is sent again (or counted as a missed probe).
const REQUEST_TIMEOUT_MS: u64 = 60;

/// A first call in progress: register `candidate` (this silo's would-be activation).
#[derive(Debug)]
struct Call {
    candidate: ActivationAddress,
    // The outstanding Register: its id, when it was sent and the view it was routed with.
    request: Option<(u64, u64, silica_silo::cluster::TableVersion)>,
}

/// An outstanding probe of one target.
#[derive(Debug)]
struct Probe {
    nonce: u64,
    sent_ms: u64,
    acked: bool,
}

/// One silo incarnation's state.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its address (endpoint + generation).
    pub(crate) me: SiloAddress,
    /// Its membership state machine.
    pub(crate) oracle: MembershipOracle,
    /// Its directory partition.
    pub(crate) partition: DirectoryPartition,
    /// Activations it runs: each got `Registered` (or found itself already registered).
    pub(crate) hosted: BTreeMap<GrainId, ActivationAddress>,
    /// Set once it read its own death or supersession: it serves nothing more.
    pub(crate) stopped: Option<StopReason>,
    /// Hand-off merges that found two activations of one grain (must stay empty).
    pub(crate) duplicates: Vec<String>,
    /// First calls that resolved (hosted here or forwarded to the winner).
    pub(crate) resolved: u64,
    table: InMemoryMembershipTable,
    rng: Rng,
    next_id: u64,
    calls: BTreeMap<GrainId, Call>,
    probes: BTreeMap<SiloAddress, Probe>,
    last_probe_ms: u64,
    /// Grains it may call and the chance (percent) per tick of starting a call.
    workload: (u64, u32),
}

impl Node {
    /// A new incarnation `me`; `workload` is (number of grains, percent chance per tick of a
    /// first call to a random one).
    pub(crate) fn new(
        me: SiloAddress,
        table: InMemoryMembershipTable,
        config: MembershipConfig,
        seed: u64,
        workload: (u64, u32),
    ) -> Self {
        Self {
            me,
            oracle: MembershipOracle::new(me, config),
            partition: DirectoryPartition::new(me, DEFAULT_DIRECTORY_VIRTUAL_NODES),
            hosted: BTreeMap::new(),
            stopped: None,
            duplicates: Vec::new(),
            resolved: 0,
            table,
            rng: Rng::new(seed),
            next_id: 1,
            calls: BTreeMap::new(),
            probes: BTreeMap::new(),
            last_probe_ms: 0,
            workload,
        }
    }

    /// Joins the table and goes active.
    pub(crate) fn join(&mut self, now_ms: u64) {
        let joined = ready(driver::join(&self.table, &mut self.oracle, now_ms)).and_then(|()| {
            ready(driver::set_status(
                &self.table,
                &mut self.oracle,
                SiloStatus::Active,
                now_ms,
            ))
        });
        if joined.is_err() {
            self.check_stop();
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&self, to: SiloAddress, body: Body) -> Envelope {
        Envelope {
            from: self.me,
            to,
            body,
        }
    }

    fn check_stop(&mut self) -> bool {
        if let Some(reason) = self.oracle.stop_decision() {
            self.stopped = Some(reason);
            self.partition.handle_stop();
            self.hosted.clear();
            self.calls.clear();
        }
        self.stopped.is_some()
    }

    /// Sets the workload: (number of grains, percent chance per tick of a first call).
    pub(crate) fn set_workload(&mut self, workload: (u64, u32)) {
        self.workload = workload;
    }

    /// Whether first calls are still in progress.
    pub(crate) fn has_pending_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Starts a first call to `grain` (a no-op if one is in progress or it is hosted here).
    pub(crate) fn start_call(&mut self, grain: GrainId) {
        if self.stopped.is_some() || self.hosted.contains_key(&grain) {
            return;
        }
        let candidate = ActivationAddress::new(self.me, ActivationId(self.id()));
        self.calls.entry(grain).or_insert(Call {
            candidate,
            request: None,
        });
    }

    /// One period of the silo's timers: membership refresh, probes and votes, hand-offs, and
    /// (re)sending first calls' registrations.
    pub(crate) fn tick(&mut self, now_ms: u64) -> Vec<Envelope> {
        if self.stopped.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.refresh();
        if self.check_stop() {
            return out;
        }
        let config = *self.oracle.config();
        if now_ms.saturating_sub(self.last_probe_ms) >= config.probe_period_ms {
            self.last_probe_ms = now_ms;
            self.probe(now_ms, &mut out);
            let _ = ready(driver::process_actions(&self.table, &mut self.oracle));
            if self.check_stop() {
                return Vec::new();
            }
            self.refresh();
        }
        for handoff in self.partition.handoffs(&self.hosted) {
            let to = handoff.to;
            out.push(self.send(to, Body::HandOff(handoff.into())));
        }
        let (grains, percent) = self.workload;
        if grains > 0 && self.rng.below(100) < percent as usize {
            let grain = super::grain(self.rng.below(grains as usize) as u64);
            self.start_call(grain);
        }
        self.drive_calls(now_ms, &mut out);
        out
    }

    fn refresh(&mut self) {
        if ready(driver::refresh(&self.table, &mut self.oracle)).is_err() || self.check_stop() {
            return;
        }
        let view = self.oracle.view().clone();
        if let Some(duplicates) = self.partition.handle_view_change(&view, &self.hosted) {
            for d in duplicates {
                self.duplicates
                    .push(format!("{} at view change: {d:?}", self.me));
            }
        }
    }

    fn probe(&mut self, now_ms: u64, out: &mut Vec<Envelope>) {
        let targets = self.oracle.probe_targets();
        self.probes.retain(|t, _| targets.contains(t));
        for target in targets {
            if let Some(p) = self.probes.get(&target)
                && !p.acked
                && now_ms.saturating_sub(p.sent_ms) >= REQUEST_TIMEOUT_MS
            {
                self.oracle.handle_probe_result(target, false, now_ms);
            }
            let nonce = self.id();
            self.probes.insert(
                target,
                Probe {
                    nonce,
                    sent_ms: now_ms,
                    acked: false,
                },
            );
            out.push(self.send(target, Body::Probe { nonce }));
        }
    }

    fn drive_calls(&mut self, now_ms: u64, out: &mut Vec<Envelope>) {
        let version = self.partition.version();
        let grains: Vec<GrainId> = self.calls.keys().cloned().collect();
        for grain in grains {
            let Some(owner) = self.partition.ring().owner(&grain) else {
                continue;
            };
            let call = &self.calls[&grain];
            if call
                .request
                .is_some_and(|(_, sent, v)| v == version && now_ms - sent < REQUEST_TIMEOUT_MS)
            {
                continue;
            }
            let candidate = call.candidate;
            if owner == self.me {
                let result = self.partition.register(version, grain.clone(), candidate);
                self.answer(&grain, version, result.into());
            } else {
                let id = self.id();
                if let Some(call) = self.calls.get_mut(&grain) {
                    call.request = Some((id, now_ms, version));
                }
                let body = Body::Register {
                    id,
                    version,
                    grain,
                    address: candidate,
                };
                out.push(self.send(owner, body));
            }
        }
    }

    // The answer to a registration routed with `version`. An answer from an older view than the
    // silo holds now is not acted on: the registration is re-sent in the current view (finding
    // itself registered there if its entry moved), so an activation is never hosted on an
    // answer whose entry a hand-off may not carry.
    fn answer(
        &mut self,
        grain: &GrainId,
        version: silica_silo::cluster::TableVersion,
        answer: RegisterAnswer,
    ) {
        let Some(call) = self.calls.get_mut(grain) else {
            return;
        };
        call.request = None;
        if version != self.partition.version() {
            return;
        }
        match answer {
            RegisterAnswer::Registered(a) | RegisterAnswer::Existing(a) if a == call.candidate => {
                self.hosted.insert(grain.clone(), a);
                self.calls.remove(grain);
                self.resolved += 1;
            }
            RegisterAnswer::Existing(_) => {
                self.calls.remove(grain);
                self.resolved += 1;
            }
            RegisterAnswer::Registered(_) | RegisterAnswer::Refused => {}
        }
    }

    /// Takes in one datagram; returns the replies.
    pub(crate) fn handle(&mut self, envelope: Envelope, now_ms: u64) -> Vec<Envelope> {
        if self.stopped.is_some() || envelope.to != self.me {
            return Vec::new();
        }
        let from = envelope.from;
        match envelope.body {
            Body::Probe { nonce } => vec![self.send(from, Body::ProbeAck { nonce })],
            Body::ProbeAck { nonce } => {
                if let Some(p) = self.probes.get_mut(&from)
                    && p.nonce == nonce
                    && !p.acked
                {
                    p.acked = true;
                    self.oracle.handle_probe_result(from, true, now_ms);
                }
                Vec::new()
            }
            Body::Register {
                id,
                version,
                grain,
                address,
            } => {
                let answer = self.partition.register(version, grain, address).into();
                vec![self.send(from, Body::RegisterReply { id, answer })]
            }
            Body::RegisterReply { id, answer } => {
                let hit = self
                    .calls
                    .iter()
                    .find(|(_, c)| c.request.is_some_and(|(r, _, _)| r == id))
                    .map(|(g, c)| (g.clone(), c.request.map(|(_, _, v)| v)));
                if let Some((grain, Some(version))) = hit {
                    self.answer(&grain, version, answer);
                }
                Vec::new()
            }
            Body::HandOff(handoff) => {
                let handoff: HandOff = handoff.into();
                match self.partition.handle_handoff(handoff) {
                    Ok(ack) => vec![self.send(from, Body::HandOffAck(ack.into()))],
                    Err(_) => Vec::new(),
                }
            }
            Body::HandOffAck(ack) => {
                let ack = ack.into();
                self.partition.handle_handoff_ack(&ack);
                for d in ack.duplicates {
                    self.duplicates
                        .push(format!("{} in a hand-off ack: {d:?}", self.me));
                }
                Vec::new()
            }
        }
    }
}
