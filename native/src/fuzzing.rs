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
