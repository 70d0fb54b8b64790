//! The bodies of the fuzz targets, in the library so that `cargo test` runs them on stable
//! (a proptest smoke run in `table::tests`) and `cargo fuzz` (native/fuzz) runs them under
//! libFuzzer with coverage guidance.

#![forbid(unsafe_code)]

use crate::table::{ColumnSpec, Kind, Layout, Table, TableError, WORD_BYTES};

/// A layout with every kind of column, and padding at the end of the row.
fn layout() -> Layout {
    Layout::new(&[
        ColumnSpec::new("heartbeat", Kind::Counter, 1),
        ColumnSpec::new("wedged", Kind::Flag, 1),
        ColumnSpec::new("received", Kind::Vector, 4),
        ColumnSpec::new("slots", Kind::Bytes, 45),
        ColumnSpec::new("seq", Kind::Counter, 1),
    ])
    .expect("a valid layout")
}

/// Decode `data` as a sequence of peer writes and apply them to a 3-row table:
/// a header byte (bit 0: strict, bits 1..: unused), then writes of
/// `[row: u8][offset: i16 LE][len: u8][len bytes]` until the input ends (a truncated last write
/// takes what is left). The property: each write is applied or rejected with a peer error, a
/// rejected write changes nothing, nothing panics, and in strict mode no monotone value falls.
/// (Flags are not checked for 0/1 on a peer write, as in the reference: `check` would catch a 2.)
pub fn apply_write_one(data: &[u8]) {
    let Some((&header, mut rest)) = data.split_first() else {
        return;
    };
    let strict = header & 1 == 1;
    let t = Table::new(layout(), &[10, 20, 30], 20, strict).expect("a valid table");
    let mut floor = t.row_bytes_of(0).expect("row 0");
    while rest.len() >= 4 {
        let row = i64::from(rest[0]) - 1; // -1 ..= 254: below, inside and past the table
        let offset = i64::from(i16::from_le_bytes([rest[1], rest[2]]));
        let len = usize::from(rest[3]);
        rest = &rest[4..];
        let (payload, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let before = snapshot(&t);
        match t.apply_write(row, offset, payload) {
            Ok(()) => {
                let (row, offset) = (row as usize, offset as usize);
                let after = t.row_bytes_of(row as i64).expect("an accepted row exists");
                assert_eq!(&after[offset..offset + payload.len()], payload);
            }
            Err(TableError::Peer(_)) => {
                assert_eq!(before, snapshot(&t), "a rejected write changed the table")
            }
            Err(e) => panic!("a peer write failed with a non-peer error: {e:?}"),
        }
        if strict {
            let row0 = t.row_bytes_of(0).expect("row 0");
            for &w in t.layout().monotone_words() {
                let word = |b: &[u8]| {
                    i64::from_ne_bytes(
                        b[w * WORD_BYTES..(w + 1) * WORD_BYTES].try_into().expect("8"),
                    )
                };
                assert!(word(&row0) >= word(&floor), "word {w} of row 0 fell");
            }
            floor = row0;
        }
    }
}

fn snapshot(t: &Table) -> Vec<Vec<u8>> {
    (0..t.n_rows() as i64).map(|r| t.row_bytes_of(r).expect("a row")).collect()
}

/// Decode `data` as a 2-sender shard's traffic and run it through `Pending`: a header of two
/// bytes (the counters' spread), then the ring bytes of sender 0 and sender 1 (8 slots of 40
/// bytes each, zero-filled when the input is short; a slot is whatever the input says). Each
/// sender's `take` from 0 up to an announced count, then the delivery of every sequence number
/// both queues cover. The property: `take` returns a peer error that queues nothing, or takes
/// entries whose counts add up to what it reports; deliveries come in increasing sequence order,
/// each sender's in increasing index order; nothing panics.
pub fn take_slots_one(data: &[u8]) {
    use crate::stream::{Pending, StreamError};
    const WINDOW: i64 = 8;
    const SLOT: usize = 40;
    let ring = (WINDOW as usize) * SLOT;
    let Some((&spread, rest)) = data.split_first() else {
        return;
    };
    let mut rings = vec![0u8; 2 * ring];
    let n = rest.len().min(rings.len());
    rings[..n].copy_from_slice(&rest[..n]);
    let mut p: Pending<Vec<u8>> = Pending::new(&[2, 3], 0, WINDOW, SLOT as i64).expect("valid");
    let mut received = [0i64; 2];
    for k in 0..2 {
        // announce 0..=10 messages: past the window sometimes (a peer error)
        let sent = i64::from((spread >> (4 * k)) & 0x0F).min(10);
        let before = p.len();
        let r = p.take(
            k,
            &rings[k * ring..(k + 1) * ring],
            0,
            0,
            sent,
            |i| Ok::<_, StreamError>((i % 2 == 0).then(|| (vec![1; 3], 3))),
            |r: &[u8], at, len| Ok(r[at..at + len].to_vec()),
        );
        match r {
            Ok(t) => {
                assert!(t.got <= sent && (t.got == sent || t.blocked));
                let counts: i64 = p.own(k).expect("rank").map(|e| e.count).sum();
                assert_eq!(counts, t.got);
                received[k] = t.got;
            }
            Err(StreamError::Peer(_)) => assert_eq!(p.len(), before, "a failed take queued"),
            Err(e) => panic!("a peer's ring gave a non-peer error: {e:?}"),
        }
    }
    let m = received[0].min(received[1]);
    let stable = m * 2 + i64::from(received[0] > m);
    let mut last = [-1i64; 2];
    let mut last_seq = -1;
    p.deliver(0, stable, |seq, k, e| {
        assert!(seq > last_seq && e.index > last[k]);
        last_seq = seq;
        last[k] = e.index;
        Ok::<(), StreamError>(())
    })
    .expect("every stable sequence number was received");
}
