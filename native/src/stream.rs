//! The receive side of one shard's stream, in pure Rust: decoding the senders' slot rings, and the
//! per-sender queues of messages received and not yet delivered, merged in round-robin order.
//!
//! The same semantics as `smr/core/pending.py` (the reference): `Pending::take` reads a sender's
//! slots into its queue, `Pending::deliver` pops the stable ones in sequence order, `drain` is raw
//! mode's delivery on receipt. Payloads are a type parameter `P` (Python `bytes` in the bindings,
//! `Vec<u8>` in the tests), and the ring is read through the `Ring` trait, so nothing here touches
//! Python. Every slot field is a peer's input: a bad one is `StreamError::Peer` and a call that
//! fails leaves the queues as they were; `StreamError::Assertion` is a caller's bug (a ring outside
//! its buffer, a stable sequence number never received).

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;

/// index i64, timestamp_ns i64, length i32, kind | flags u32, little endian.
pub const SLOT_HEADER_BYTES: usize = 24;
pub const KIND_DATA: u32 = 1;
pub const KIND_NULLS: u32 = 2;
pub const KIND_LARGE: u32 = 3;
pub const FLAG_REPLY: u32 = 1 << 8;
pub const KIND_MASK: u32 = 0xFF;
pub const SEQ_MAX: i64 = (1 << 32) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The sender's slots break the protocol: its fault (the replica suspects it).
    Peer(String),
    /// A rule of the stream itself does not hold: our bug, or the caller's.
    Assertion(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Peer(m) | StreamError::Assertion(m) => f.write_str(m),
        }
    }
}

/// Where the slot rings are: the table's bytes, read a range at a time.
pub trait Ring {
    fn byte_len(&self) -> usize;
    /// Copy `out.len()` bytes from `at` (the caller checked the range).
    fn copy_to(&self, at: usize, out: &mut [u8]);
}

impl Ring for [u8] {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn copy_to(&self, at: usize, out: &mut [u8]) {
        out.copy_from_slice(&self[at..at + out.len()]);
    }
}

/// One queued message or null run: `count` is 1 for a message, the run length for nulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<P> {
    pub index: i64,
    pub count: i64,
    pub kind: u32,
    pub ts: i64,
    pub payload: Option<P>,
    pub reply: bool,
}

/// What `take` read: the next message to read, the largest timestamp seen, and whether it stopped
/// at a large message whose payload has not arrived (the next message is that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub got: i64,
    pub ts_max: i64,
    pub blocked: bool,
}

/// Per sender rank of one shard: what was received and is not delivered yet, in index order.
#[derive(Debug)]
pub struct Pending<P> {
    queues: Vec<VecDeque<Entry<P>>>,
    sender_ids: Vec<i64>,
    g: i64,
    window: i64,
    slot_bytes: i64,
}

fn le_i64(b: &[u8]) -> i64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    i64::from_le_bytes(w)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    u32::from_le_bytes(w)
}

impl<P> Pending<P> {
    pub fn new(
        sender_ids: &[i64],
        g: i64,
        window_max: i64,
        slot_bytes: i64,
    ) -> Result<Self, StreamError> {
        if sender_ids.is_empty() {
            return Err(StreamError::Assertion("a shard has at least one sender".into()));
        }
        if window_max < 2 || slot_bytes < SLOT_HEADER_BYTES as i64 {
            return Err(StreamError::Assertion(format!(
                "a window of {window_max} slots of {slot_bytes} bytes"
            )));
        }
        // the ring's byte length must be an index: checked once here, not per slot
        if window_max.checked_mul(slot_bytes).is_none_or(|b| usize::try_from(b).is_err()) {
            return Err(StreamError::Assertion(format!(
                "a ring of {window_max} slots of {slot_bytes} bytes is too large"
            )));
        }
        Ok(Pending {
            queues: sender_ids.iter().map(|_| VecDeque::new()).collect(),
            sender_ids: sender_ids.to_vec(),
            g,
            window: window_max,
            slot_bytes,
        })
    }

    pub fn n_senders(&self) -> usize {
        self.sender_ids.len()
    }

    /// The member ids of the senders, in rank order.
    pub fn sender_ids(&self) -> &[i64] {
        &self.sender_ids
    }

    /// The member id of sender rank `k` (an error for a rank the shard does not have).
    pub fn sender_id(&self, k: usize) -> Result<i64, StreamError> {
        self.sender_ids.get(k).copied().ok_or_else(|| {
            StreamError::Assertion(format!("sender rank {k} of {}", self.sender_ids.len()))
        })
    }

    /// Entries queued over every sender.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    fn queue(&self, k: usize) -> Result<&VecDeque<Entry<P>>, StreamError> {
        self.queues.get(k).ok_or_else(|| {
            StreamError::Assertion(format!("sender rank {k} of {}", self.sender_ids.len()))
        })
    }

    /// Queue one of my own messages (or null runs) as I place it in my ring.
    pub fn append(&mut self, k: usize, entry: Entry<P>) -> Result<(), StreamError> {
        self.queue(k)?;
        self.queues[k].push_back(entry);
        Ok(())
    }

    /// Sender rank `k`'s entries not yet delivered, oldest first.
    pub fn own(&self, k: usize) -> Result<impl Iterator<Item = &Entry<P>>, StreamError> {
        Ok(self.queue(k)?.iter())
    }

    /// Read sender rank `k`'s slots from message `got` up to `sent` out of its ring, which starts
    /// at byte `ring` of `buf`. `large(index)` takes the payload of a large message and its length
    /// if the data plane brought it; `data(at, len)` makes a payload of the ring's bytes. On an
    /// error nothing of this call is queued (payloads `large` handed over are dropped, as the
    /// reference drops them: the sender is blocked for good).
    #[allow(clippy::too_many_arguments)]
    pub fn take<R, E>(
        &mut self,
        k: usize,
        buf: &R,
        ring: i64,
        got: i64,
        sent: i64,
        mut large: impl FnMut(i64) -> Result<Option<(P, usize)>, E>,
        mut data: impl FnMut(&R, usize, usize) -> Result<P, E>,
    ) -> Result<Taken, E>
    where
        R: Ring + ?Sized,
        E: From<StreamError>,
    {
        self.queue(k)?;
        let (window, slot_bytes, g) = (self.window, self.slot_bytes, self.g);
        let sender = self.sender_ids[k];
        if sent > got.saturating_add(window) {
            return Err(StreamError::Peer(format!(
                "sender {sender} announced {sent} messages in shard {g} but a window holds \
                 {window} past the {got} received"
            ))
            .into());
        }
        let ring_bytes = (window * slot_bytes) as usize; // fits: checked in `new`
        let start = usize::try_from(ring)
            .ok()
            .filter(|&r| r.checked_add(ring_bytes).is_some_and(|end| end <= buf.byte_len()));
        let Some(start) = start else {
            return Err(StreamError::Assertion(format!(
                "a ring of {ring_bytes} bytes at {ring} is outside the table's {} bytes",
                buf.byte_len()
            ))
            .into());
        };
        let payload_max = slot_bytes - SLOT_HEADER_BYTES as i64;
        let mut taken: Vec<Entry<P>> = Vec::new();
        let mut ts_max = 0i64;
        let mut blocked = false;
        let mut got = got;
        let mut header = [0u8; SLOT_HEADER_BYTES];
        while got < sent {
            // `got % window` is below `window`, so the slot lies inside the ring
            let base = start + (got.rem_euclid(window) * slot_bytes) as usize;
            buf.copy_to(base, &mut header);
            let index = le_i64(&header[0..8]);
            let ts = le_i64(&header[8..16]);
            let length = i64::from(le_u32(&header[16..20]) as i32);
            let kind_flags = le_u32(&header[20..24]);
            if index != got {
                return Err(StreamError::Peer(format!(
                    "slot for message {got} of sender {sender} in shard {g} holds message {index}"
                ))
                .into());
            }
            let mut kind = kind_flags & KIND_MASK;
            let reply = kind_flags & FLAG_REPLY != 0;
            let (payload, count) = match kind {
                KIND_DATA => {
                    if !(0..=payload_max).contains(&length) {
                        return Err(StreamError::Peer(format!(
                            "slot payload length {length} in shard {g}"
                        ))
                        .into());
                    }
                    (Some(data(buf, base + SLOT_HEADER_BYTES, length as usize)?), 1)
                }
                KIND_NULLS => {
                    if !(1..=sent - got).contains(&length) {
                        return Err(StreamError::Peer(format!(
                            "null run of {length} in shard {g}"
                        ))
                        .into());
                    }
                    (None, length)
                }
                KIND_LARGE => {
                    let Some((p, len)) = large(got)? else {
                        blocked = true; // the data plane has not brought it yet
                        break;
                    };
                    if i64::try_from(len).ok() != Some(length) {
                        return Err(StreamError::Peer(format!(
                            "large message {got} in shard {g}: {len} bytes, its slot says {length}"
                        ))
                        .into());
                    }
                    kind = KIND_DATA;
                    (Some(p), 1)
                }
                _ => {
                    return Err(
                        StreamError::Peer(format!("unknown slot kind {kind} in shard {g}")).into()
                    )
                }
            };
            ts_max = ts_max.max(ts);
            taken.push(Entry { index: got, count, kind, ts, payload, reply });
            got += count; // count <= sent - got: no overflow
        }
        self.queues[k].extend(taken);
        Ok(Taken { got, ts_max, blocked })
    }

    /// Raw mode: every entry queued for sender rank `k`, delivered on receipt, nulls dropped;
    /// `emit(seq, entry)` for each message.
    pub fn drain<E>(
        &mut self,
        k: usize,
        mut emit: impl FnMut(i64, Entry<P>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StreamError>,
    {
        self.queue(k)?;
        let n = self.sender_ids.len() as i64;
        while let Some(e) = self.queues[k].pop_front() {
            if e.kind == KIND_NULLS {
                continue;
            }
            let seq = e.index.checked_mul(n).and_then(|s| s.checked_add(k as i64));
            match seq {
                Some(seq) if (0..=SEQ_MAX).contains(&seq) => emit(seq, e)?,
                _ => {
                    return Err(StreamError::Assertion(format!(
                        "sequence of message {} of sender rank {k} overflows the epoch's 32 bits",
                        e.index
                    ))
                    .into())
                }
            }
        }
        Ok(())
    }

    /// Deliver sequence numbers `seq` up to `stable`, in order: `emit(seq, sender rank, entry)`
    /// for each message; a null run is consumed one sequence number at a time.
    pub fn deliver<E>(
        &mut self,
        mut seq: i64,
        stable: i64,
        mut emit: impl FnMut(i64, usize, Entry<P>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StreamError>,
    {
        let n = self.sender_ids.len() as i64;
        while seq < stable {
            let k = seq.rem_euclid(n) as usize;
            let index = seq.div_euclid(n);
            let q = &mut self.queues[k];
            let Some(e) = q.front() else {
                return Err(StreamError::Assertion(format!(
                    "sequence {seq} of shard {} is stable but was never received",
                    self.g
                ))
                .into());
            };
            if e.kind == KIND_NULLS {
                if index == e.index + e.count - 1 {
                    q.pop_front();
                }
                seq += 1;
                continue;
            }
            if e.index != index {
                return Err(StreamError::Assertion(format!(
                    "sequence {seq} is message {index} of sender rank {k}, its queue holds {}",
                    e.index
                ))
                .into());
            }
            let e = q.pop_front().expect("front checked above");
            emit(seq, k, e)?;
            seq += 1;
        }
        if seq > SEQ_MAX {
            return Err(StreamError::Assertion(format!(
                "sequence {seq} overflows the epoch's 32 bits"
            ))
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WINDOW: i64 = 8;
    const SLOT: i64 = 40;

    fn slot(index: i64, ts: i64, length: i32, kind_flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::with_capacity(SLOT as usize);
        s.extend(index.to_le_bytes());
        s.extend(ts.to_le_bytes());
        s.extend(length.to_le_bytes());
        s.extend(kind_flags.to_le_bytes());
        s.extend(payload);
        s.resize(SLOT as usize, 0);
        s
    }

    fn place(ring: &mut [u8], index: i64, bytes: &[u8]) {
        let at = (index % WINDOW * SLOT) as usize;
        ring[at..at + SLOT as usize].copy_from_slice(bytes);
    }

    type P = Vec<u8>;

    fn take(
        p: &mut Pending<P>,
        k: usize,
        ring: &[u8],
        got: i64,
        sent: i64,
        large: &mut Vec<(i64, Vec<u8>)>,
    ) -> Result<Taken, StreamError> {
        p.take(
            k,
            ring,
            0,
            got,
            sent,
            |i| {
                Ok(large.iter().position(|(j, _)| *j == i).map(|at| large.remove(at).1).map(|d| {
                    let n = d.len();
                    (d, n)
                }))
            },
            |r: &[u8], at, len| Ok(r[at..at + len].to_vec()),
        )
    }

    fn delivered(
        p: &mut Pending<P>,
        seq: i64,
        stable: i64,
    ) -> Result<Vec<(i64, usize, P)>, StreamError> {
        let mut out = Vec::new();
        p.deliver(seq, stable, |s, k, e| {
            out.push((s, k, e.payload.expect("a message has a payload")));
            Ok::<(), StreamError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn round_robin_with_nulls() {
        let mut p: Pending<P> = Pending::new(&[2, 3], 0, WINDOW, SLOT).unwrap();
        let mut a = vec![0u8; (WINDOW * SLOT) as usize];
        let mut b = a.clone();
        place(&mut a, 0, &slot(0, 5, 1, KIND_DATA, b"x"));
        place(&mut a, 1, &slot(1, 6, 1, KIND_DATA | FLAG_REPLY, b"y"));
        place(&mut b, 0, &slot(0, 0, 2, KIND_NULLS, b""));
        let mut none = Vec::new();
        assert_eq!(
            take(&mut p, 0, &a, 0, 2, &mut none).unwrap(),
            Taken { got: 2, ts_max: 6, blocked: false }
        );
        assert_eq!(take(&mut p, 1, &b, 0, 2, &mut none).unwrap().got, 2);
        let out = delivered(&mut p, 0, 4).unwrap();
        assert_eq!(out, vec![(0, 0, b"x".to_vec()), (2, 0, b"y".to_vec())]);
        assert!(p.is_empty());
    }

    #[test]
    fn bad_slots_are_the_peers_and_change_nothing() {
        let mut p: Pending<P> = Pending::new(&[2], 0, WINDOW, SLOT).unwrap();
        let mut a = vec![0u8; (WINDOW * SLOT) as usize];
        place(&mut a, 0, &slot(0, 1, 1, KIND_DATA, b"x"));
        place(&mut a, 1, &slot(7, 1, 1, KIND_DATA, b"x"));
        let mut none = Vec::new();
        let e = take(&mut p, 0, &a, 0, 2, &mut none).unwrap_err();
        assert_eq!(
            e,
            StreamError::Peer("slot for message 1 of sender 2 in shard 0 holds message 7".into())
        );
        assert!(p.is_empty());
        for bad in [
            slot(1, 1, 17, KIND_DATA, b""),
            slot(1, 1, -1, KIND_DATA, b""),
            slot(1, 1, 2, KIND_NULLS, b""),
            slot(1, 1, 0, KIND_NULLS, b""),
            slot(1, 1, 0, 9, b""),
        ] {
            place(&mut a, 1, &bad);
            assert!(matches!(take(&mut p, 0, &a, 0, 2, &mut none), Err(StreamError::Peer(_))));
            assert!(p.is_empty());
        }
        assert!(matches!(take(&mut p, 0, &a, 0, WINDOW + 1, &mut none), Err(StreamError::Peer(_))));
        // a ring outside the buffer is the caller's bug
        assert!(matches!(
            take(&mut p, 0, &a[1..], 0, 1, &mut none),
            Err(StreamError::Assertion(_))
        ));
    }

    #[test]
    fn large_messages_block_until_their_payload_is_there() {
        let mut p: Pending<P> = Pending::new(&[2], 0, WINDOW, SLOT).unwrap();
        let mut a = vec![0u8; (WINDOW * SLOT) as usize];
        place(&mut a, 0, &slot(0, 1, 1, KIND_DATA, b"x"));
        place(&mut a, 1, &slot(1, 2, 100, KIND_LARGE, b""));
        let mut inbox = Vec::new();
        assert_eq!(
            take(&mut p, 0, &a, 0, 2, &mut inbox).unwrap(),
            Taken { got: 1, ts_max: 1, blocked: true }
        );
        inbox.push((1, vec![7; 100]));
        assert_eq!(take(&mut p, 0, &a, 1, 2, &mut inbox).unwrap().got, 2);
        assert_eq!(delivered(&mut p, 0, 2).unwrap()[1].2, vec![7; 100]);
        inbox.push((1, vec![7; 99]));
        assert!(matches!(take(&mut p, 0, &a, 1, 2, &mut inbox), Err(StreamError::Peer(_))));
    }

    #[test]
    fn delivering_what_was_never_received_is_an_assertion() {
        let mut p: Pending<P> = Pending::new(&[2, 3], 0, WINDOW, SLOT).unwrap();
        assert!(matches!(delivered(&mut p, 0, 1), Err(StreamError::Assertion(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The stable smoke run of the fuzz target (`fuzz/fuzz_targets/take_slots.rs`): any ring
        /// bytes and counters are taken or a peer error, never a panic, and deliveries keep order.
        #[test]
        fn take_slots_fuzz_smoke(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            crate::fuzzing::take_slots_one(&data);
        }
    }
}
