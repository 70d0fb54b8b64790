//! The shared state table (SST), pure Rust: the same layout and rules as `smr/core/table.py`.
//!
//! * Columns are int64 counters, int64 0/1 flags, fixed-length int64 vectors and fixed-size byte
//!   slots. Every value starts on an 8-byte boundary and rows are padded to 64 bytes.
//! * A member writes only its own row (`set`, `vset`, `bset`); `push` returns the byte ranges of its
//!   row to copy into its peers' copies; `apply_write` is the receiving side of a peer's write.
//! * Counters, flags and vector entries are monotone within an epoch. Own-row writes check it
//!   (the Python reference asserts); peer writes are checked in strict mode and are the peer's
//!   fault (`TableError::Peer`); `check` verifies the whole table against the previous check.
//!
//! Every entry point returns a `TableError` on bad input; none panics. The error variants map onto
//! the Python exception types the reference raises for the same input (`Peer` onto
//! `PeerProtocolError`, `Assertion` onto `AssertionError`, ...) and their messages are the
//! reference's, so the differential tests can compare both.
//!
//! The words are `AtomicI64`s (relaxed loads and stores: plain moves on x86-64) so that the table's
//! memory can be shared with Python (a writable memoryview, as the reference's `words` and `buf`)
//! without `unsafe` in this module: Python's writes land in interior-mutable memory.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;

pub const WORD_BYTES: usize = 8;
pub const ROW_ALIGN_BYTES: usize = 64;
/// A table's whole memory (rows times row bytes) may not exceed this: every buffer has a limit.
pub const TABLE_BYTES_MAX: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Flag,
    Vector,
    Bytes,
}

impl Kind {
    /// The Python `ColumnKind` value.
    pub fn parse(value: &str) -> Option<Kind> {
        match value {
            "counter" => Some(Kind::Counter),
            "flag" => Some(Kind::Flag),
            "vector" => Some(Kind::Vector),
            "bytes" => Some(Kind::Bytes),
            _ => None,
        }
    }

    pub fn monotone(self) -> bool {
        self != Kind::Bytes
    }
}

/// An error of a table operation, by the Python exception type the reference raises for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A peer broke the protocol (`PeerProtocolError`).
    Peer(String),
    /// The caller broke a rule the reference asserts (`AssertionError`).
    Assertion(String),
    /// A row outside the table (`IndexError`).
    Index(String),
    /// An unknown column name (`KeyError`; the message is the name).
    Key(String),
    /// A value that does not fit an int64, or an empty row set (`ValueError`).
    Value(String),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Peer(m)
            | TableError::Assertion(m)
            | TableError::Index(m)
            | TableError::Key(m)
            | TableError::Value(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TableError {}

pub type Result<T> = std::result::Result<T, TableError>;

/// A column declaration (`Column` in the reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: Kind,
    /// Entries for a vector, bytes for byte slots, 1 otherwise.
    pub length: usize,
}

impl ColumnSpec {
    pub fn new(name: &str, kind: Kind, length: usize) -> ColumnSpec {
        ColumnSpec { name: name.to_owned(), kind, length }
    }

    fn size_bytes(&self) -> Option<usize> {
        match self.kind {
            Kind::Bytes => align(self.length, WORD_BYTES),
            _ => self.length.checked_mul(WORD_BYTES),
        }
    }
}

/// A column placed in the row (`Placed` in the reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub name: String,
    pub kind: Kind,
    pub length: usize,
    /// Bytes from the start of the row.
    pub offset: usize,
    /// `offset / 8`, for int64 access.
    pub word: usize,
    /// `offset + size` in bytes.
    pub end: usize,
}

/// The fixed row layout, computed once from the declarations in declaration order.
#[derive(Clone, Debug)]
pub struct Layout {
    placed: Vec<Placed>,
    by_name: HashMap<String, usize>,
    row_bytes: usize,
    /// Word indices of monotone values, ascending.
    monotone_words: Vec<usize>,
    /// For each word of the row, the column holding it (`None`: padding at the end of the row).
    column_of_word: Vec<Option<usize>>,
}

fn align(n: usize, to: usize) -> Option<usize> {
    Some(n.checked_add(to - 1)? / to * to)
}

impl Layout {
    pub fn new(columns: &[ColumnSpec]) -> Result<Layout> {
        let mut placed = Vec::with_capacity(columns.len());
        let mut by_name = HashMap::with_capacity(columns.len());
        let mut offset = 0usize;
        let too_big = || TableError::Value("the row layout is too large".to_owned());
        for (i, c) in columns.iter().enumerate() {
            if c.length == 0 {
                return Err(TableError::Assertion(format!("('{}', {})", c.name, c.length)));
            }
            if matches!(c.kind, Kind::Counter | Kind::Flag) && c.length != 1 {
                return Err(TableError::Assertion(format!("('{}', {})", c.name, c.length)));
            }
            if by_name.insert(c.name.clone(), i).is_some() {
                return Err(TableError::Assertion(format!("column '{}' declared twice", c.name)));
            }
            let size = c.size_bytes().ok_or_else(too_big)?;
            let end =
                offset.checked_add(size).filter(|&e| e <= TABLE_BYTES_MAX).ok_or_else(too_big)?;
            placed.push(Placed {
                name: c.name.clone(),
                kind: c.kind,
                length: c.length,
                offset,
                word: offset / WORD_BYTES,
                end,
            });
            offset = end;
        }
        let row_bytes = align(offset, ROW_ALIGN_BYTES).ok_or_else(too_big)?.max(ROW_ALIGN_BYTES);
        let mut monotone_words = Vec::new();
        let mut column_of_word = vec![None; row_bytes / WORD_BYTES];
        for (i, p) in placed.iter().enumerate() {
            column_of_word[p.word..p.end / WORD_BYTES].fill(Some(i));
            if p.kind.monotone() {
                monotone_words.extend(p.word..p.end / WORD_BYTES);
            }
        }
        Ok(Layout { placed, by_name, row_bytes, monotone_words, column_of_word })
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    pub fn row_words(&self) -> usize {
        self.row_bytes / WORD_BYTES
    }

    pub fn columns(&self) -> &[Placed] {
        &self.placed
    }

    pub fn monotone_words(&self) -> &[usize] {
        &self.monotone_words
    }

    /// The column named `name`, or the reference's `KeyError`.
    pub fn get(&self, name: &str) -> Result<&Placed> {
        match self.by_name.get(name) {
            Some(&i) => Ok(&self.placed[i]),
            None => Err(TableError::Key(name.to_owned())),
        }
    }

    /// The column holding the byte at `offset` of the row.
    pub fn column_at(&self, offset: usize) -> Option<&Placed> {
        let i = (*self.column_of_word.get(offset / WORD_BYTES)?)?;
        Some(&self.placed[i])
    }
}

/// A one-sided write of a byte range of the writer's own row into a peer's copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub offset: usize,
    pub data: Vec<u8>,
}

/// One member's copy of the shared state table for one epoch.
pub struct Table {
    layout: Layout,
    members: Vec<i64>,
    my_row: usize,
    strict: AtomicBool,
    words: Box<[AtomicI64]>,
    /// The monotone values at the last `check` (row-major), for the next one. Every method takes
    /// `&self` (the memory is atomics, `strict` too), so the Python class needs no borrow flag.
    floor: Mutex<Option<Vec<i64>>>,
}

fn row_error(row: i64, n_rows: usize) -> TableError {
    TableError::Index(format!("row {row} is outside the table's {n_rows} rows"))
}

impl Table {
    /// `members` are the member ids in rank order; row i belongs to `members[i]`.
    pub fn new(layout: Layout, members: &[i64], me: i64, strict: bool) -> Result<Table> {
        if members.is_empty() {
            return Err(TableError::Assertion("a table needs at least one member".to_owned()));
        }
        let mut seen = members.to_vec();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != members.len() {
            return Err(TableError::Assertion(format!("duplicate members {members:?}")));
        }
        let Some(my_row) = members.iter().position(|&m| m == me) else {
            return Err(TableError::Assertion(format!("({me}, {members:?})")));
        };
        let total = layout
            .row_bytes()
            .checked_mul(members.len())
            .filter(|&t| t <= TABLE_BYTES_MAX)
            .ok_or_else(|| {
                TableError::Value(format!(
                    "a table of {} rows of {} bytes is over {TABLE_BYTES_MAX} bytes",
                    members.len(),
                    layout.row_bytes()
                ))
            })?;
        let mut words = Vec::new();
        words
            .try_reserve_exact(total / WORD_BYTES)
            .map_err(|_| TableError::Value(format!("cannot allocate a table of {total} bytes")))?;
        words.resize_with(total / WORD_BYTES, || AtomicI64::new(0));
        Ok(Table {
            layout,
            members: members.to_vec(),
            my_row,
            strict: AtomicBool::new(strict),
            words: words.into_boxed_slice(),
            floor: Mutex::new(None),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn members(&self) -> &[i64] {
        &self.members
    }

    pub fn n_rows(&self) -> usize {
        self.members.len()
    }

    pub fn my_row(&self) -> usize {
        self.my_row
    }

    pub fn row_bytes(&self) -> usize {
        self.layout.row_bytes
    }

    pub fn row_words(&self) -> usize {
        self.layout.row_words()
    }

    pub fn strict(&self) -> bool {
        self.strict.load(Relaxed)
    }

    pub fn set_strict(&self, strict: bool) {
        self.strict.store(strict, Relaxed);
    }

    /// The table's memory, to share with Python (word `i` of row `r` is `r * row_words + i`).
    pub fn memory(&self) -> &[AtomicI64] {
        &self.words
    }

    pub fn byte_len(&self) -> usize {
        self.words.len() * WORD_BYTES
    }

    fn row_index(&self, row: i64) -> Result<usize> {
        usize::try_from(row)
            .ok()
            .filter(|&r| r < self.n_rows())
            .ok_or_else(|| row_error(row, self.n_rows()))
    }

    fn load(&self, i: usize) -> i64 {
        self.words[i].load(Relaxed)
    }

    /// `len` bytes from byte `at` of the table. The caller keeps the range inside the table.
    fn read_bytes(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.read_into(at, &mut out);
        out
    }

    /// Fill `out` with the bytes from byte `at` of the table (whole words one load each). The
    /// caller keeps the range inside the table.
    pub fn read_into(&self, at: usize, out: &mut [u8]) {
        let head = ((WORD_BYTES - at % WORD_BYTES) % WORD_BYTES).min(out.len());
        let (first, rest) = out.split_at_mut(head);
        if !first.is_empty() {
            let w = at / WORD_BYTES;
            let lo = at % WORD_BYTES;
            first.copy_from_slice(&self.load(w).to_ne_bytes()[lo..lo + head]);
        }
        let w0 = (at + head) / WORD_BYTES;
        let w_tail = w0 + rest.len() / WORD_BYTES;
        let mut chunks = rest.chunks_exact_mut(WORD_BYTES);
        for (chunk, word) in (&mut chunks).zip(&self.words[w0..]) {
            chunk.copy_from_slice(&word.load(Relaxed).to_ne_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let n = tail.len();
            tail.copy_from_slice(&self.load(w_tail).to_ne_bytes()[..n]);
        }
    }

    /// Write `data` at byte `at` of the table (whole words one store each, partial words read,
    /// patched and stored). The caller keeps the range inside the table.
    fn write_bytes(&self, at: usize, data: &[u8]) {
        let patch = |w: usize, lo: usize, part: &[u8]| {
            let mut bytes = self.load(w).to_ne_bytes();
            bytes[lo..lo + part.len()].copy_from_slice(part);
            self.words[w].store(i64::from_ne_bytes(bytes), Relaxed);
        };
        let head = ((WORD_BYTES - at % WORD_BYTES) % WORD_BYTES).min(data.len());
        let (first, rest) = data.split_at(head);
        if !first.is_empty() {
            patch(at / WORD_BYTES, at % WORD_BYTES, first);
        }
        let w0 = (at + head) / WORD_BYTES;
        let chunks = rest.chunks_exact(WORD_BYTES);
        let tail = chunks.remainder();
        for (chunk, word) in chunks.zip(&self.words[w0..]) {
            let mut bytes = [0u8; WORD_BYTES];
            bytes.copy_from_slice(chunk);
            word.store(i64::from_ne_bytes(bytes), Relaxed);
        }
        if !tail.is_empty() {
            patch(w0 + rest.len() / WORD_BYTES, 0, tail);
        }
    }

    // -- reads (any row) ----------------------------------------------------------------------

    pub fn get(&self, row: i64, name: &str) -> Result<i64> {
        let p = self.layout.get(name)?;
        let row = self.row_index(row)?;
        Ok(self.load(row * self.row_words() + p.word))
    }

    pub fn vget(&self, row: i64, name: &str, index: i64) -> Result<i64> {
        let p = self.layout.get(name)?;
        let i = self.vector_index(p, index)?;
        let row = self.row_index(row)?;
        Ok(self.load(row * self.row_words() + p.word + i))
    }

    pub fn vrow(&self, row: i64, name: &str) -> Result<Vec<i64>> {
        let p = self.layout.get(name)?;
        let row = self.row_index(row)?;
        let start = row * self.row_words() + p.word;
        // A vector's entries; for a byte column (a misuse) its words, never past the column.
        let n = p.length.min((p.end - p.offset) / WORD_BYTES);
        Ok((start..start + n).map(|i| self.load(i)).collect())
    }

    pub fn bget(&self, row: i64, name: &str, start: i64, end: i64) -> Result<Vec<u8>> {
        let p = self.layout.get(name)?;
        let (s, e) = byte_range(p, start, end)?;
        let row = self.row_index(row)?;
        Ok(self.read_bytes(row * self.row_bytes() + p.offset + s, e - s))
    }

    /// The minimum of a counter over `rows` (`None`: every row): the stability pattern.
    pub fn column_min(&self, name: &str, rows: Option<&[i64]>) -> Result<i64> {
        let p = self.layout.get(name)?;
        self.min_of_word(p.word, rows)
    }

    pub fn vcolumn_min(&self, name: &str, index: i64, rows: Option<&[i64]>) -> Result<i64> {
        let p = self.layout.get(name)?;
        let i = self.vector_index(p, index)?;
        self.min_of_word(p.word + i, rows)
    }

    fn min_of_word(&self, word: usize, rows: Option<&[i64]>) -> Result<i64> {
        let rw = self.row_words();
        let min = match rows {
            None => (0..self.n_rows()).map(|r| self.load(r * rw + word)).min(),
            Some(rows) => {
                let mut min: Option<i64> = None;
                for &r in rows {
                    let v = self.load(self.row_index(r)? * rw + word);
                    min = Some(min.map_or(v, |m| m.min(v)));
                }
                min
            }
        };
        min.ok_or_else(|| TableError::Value("min() arg is an empty sequence".to_owned()))
    }

    pub fn row_bytes_of(&self, row: i64) -> Result<Vec<u8>> {
        let row = self.row_index(row)?;
        Ok(self.read_bytes(row * self.row_bytes(), self.row_bytes()))
    }

    /// The word index of entry `index` of `p`: the reference asserts `0 <= index < length`. For a
    /// byte column (a misuse) the reference would index past the column; here the index must
    /// also stay inside the column's words.
    fn vector_index(&self, p: &Placed, index: i64) -> Result<usize> {
        usize::try_from(index)
            .ok()
            .filter(|&i| i < p.length && i < (p.end - p.offset) / WORD_BYTES)
            .ok_or_else(|| TableError::Assertion(format!("('{}', {index})", p.name)))
    }

    // -- writes (own row only) ----------------------------------------------------------------

    pub fn set(&self, name: &str, value: i64) -> Result<()> {
        let p = self.layout.get(name)?;
        let i = self.my_row * self.row_words() + p.word;
        let old = self.load(i);
        if value < old {
            return Err(TableError::Assertion(format!(
                "column {name} would decrease from {old} to {value}"
            )));
        }
        if p.kind == Kind::Flag && !(value == 0 || value == 1) {
            return Err(TableError::Assertion(format!("('{name}', {value})")));
        }
        self.words[i].store(value, Relaxed);
        Ok(())
    }

    pub fn vset(&self, name: &str, index: i64, value: i64) -> Result<()> {
        let p = self.layout.get(name)?;
        let k = self.vector_index(p, index)?;
        let i = self.my_row * self.row_words() + p.word + k;
        let old = self.load(i);
        if value < old {
            return Err(TableError::Assertion(format!(
                "column {name}[{index}] would decrease from {old} to {value}"
            )));
        }
        self.words[i].store(value, Relaxed);
        Ok(())
    }

    /// The current value of own-row word `word` of column `name` (for the messages the bindings
    /// build when a Python int does not fit an int64).
    pub fn own_value(&self, name: &str, index: i64) -> Result<i64> {
        let p = self.layout.get(name)?;
        let k = if index == 0 { 0 } else { self.vector_index(p, index)? };
        Ok(self.load(self.my_row * self.row_words() + p.word + k))
    }

    pub fn bset(&self, name: &str, start: i64, data: &[u8]) -> Result<()> {
        let p = self.layout.get(name)?;
        if p.kind != Kind::Bytes {
            return Err(TableError::Assertion(name.to_owned()));
        }
        let end = i64::try_from(data.len()).ok().and_then(|n| start.checked_add(n));
        let (s, _) = match end {
            Some(end) => byte_range(p, start, end)?,
            None => return Err(TableError::Assertion(format!("('{name}', {start}, ...)"))),
        };
        self.write_bytes(self.my_row * self.row_bytes() + p.offset + s, data);
        Ok(())
    }

    // -- one-sided writes ---------------------------------------------------------------------

    /// The writes that copy these columns of my row into a peer's copy; adjacent columns are
    /// merged into one write (Derecho's `put(offset, size)`).
    pub fn push<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<Write>> {
        Ok(self.push_spans(names)?.into_iter().map(|span| self.write_of(span)).collect())
    }

    /// The `(offset, len)` ranges of my row that `push(names)` writes, in order: the columns'
    /// ranges sorted, overlapping and adjacent ones merged.
    pub fn push_spans<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<(usize, usize)>> {
        let mut spans = Vec::with_capacity(names.len());
        for n in names {
            let p = self.layout.get(n.as_ref())?;
            spans.push((p.offset, p.end));
        }
        spans.sort_unstable();
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match out.last_mut() {
                Some((start, len)) if s <= *start + *len => *len = (*start + *len).max(e) - *start,
                _ => out.push((s, e - s)),
            }
        }
        Ok(out)
    }

    /// The write of `len` bytes at `offset` of my row.
    pub fn write_of(&self, (offset, len): (usize, usize)) -> Write {
        Write { offset, data: self.read_bytes(self.my_row * self.row_bytes() + offset, len) }
    }

    /// Fill `out` from byte `offset` of my row (`offset + out.len()` within the row, as the
    /// spans above are).
    pub fn read_own(&self, offset: usize, out: &mut [u8]) {
        debug_assert!(offset + out.len() <= self.row_bytes());
        self.read_into(self.my_row * self.row_bytes() + offset, out);
    }

    /// A write of part of a byte-slot column, widened to whole words.
    pub fn push_bytes(&self, name: &str, start: i64, end: i64) -> Result<Write> {
        Ok(self.write_of(self.push_bytes_span(name, start, end)?))
    }

    pub fn push_bytes_span(&self, name: &str, start: i64, end: i64) -> Result<(usize, usize)> {
        let p = self.layout.get(name)?;
        let (s, e) = match (usize::try_from(start), usize::try_from(end)) {
            (Ok(s), Ok(e)) if s < e && e <= p.length => (s, e),
            _ => return Err(TableError::Assertion(format!("('{name}', {start}, {end})"))),
        };
        let lo = p.offset + s - s % WORD_BYTES;
        let hi = (p.offset + e.div_ceil(WORD_BYTES) * WORD_BYTES).min(p.end);
        Ok((lo, hi - lo))
    }

    pub fn push_row(&self) -> Write {
        self.write_of((0, self.row_bytes()))
    }

    /// Apply a peer's one-sided write into its row of my copy (whole, as transports promise).
    /// Every error is the peer's (`TableError::Peer`), and a rejected write changes nothing.
    pub fn apply_write(&self, row: i64, offset: i64, data: &[u8]) -> Result<()> {
        let row = usize::try_from(row).ok().filter(|&r| r < self.n_rows()).ok_or_else(|| {
            TableError::Peer(format!("write for row {row}, the table has {} rows", self.n_rows()))
        })?;
        if row == self.my_row {
            return Err(TableError::Peer("a peer wrote into my own row".to_owned()));
        }
        let offset = usize::try_from(offset)
            .ok()
            .filter(|&o| {
                o % WORD_BYTES == 0
                    && o.checked_add(data.len()).is_some_and(|e| e <= self.row_bytes())
            })
            .ok_or_else(|| self.misfit(offset, data.len()))?;
        if self.strict() {
            self.check_monotone_write(row, offset, data)?;
        }
        self.write_bytes(row * self.row_bytes() + offset, data);
        Ok(())
    }

    /// The reference's message for a write that does not fit the row.
    pub fn misfit(&self, offset: impl fmt::Display, len: usize) -> TableError {
        TableError::Peer(format!(
            "write at offset {offset} of {len} bytes does not fit a {}-byte row",
            self.row_bytes()
        ))
    }

    /// The reference compares each monotone word the write touches, the write's bytes padded
    /// with zeros to whole words, against the word it replaces.
    fn check_monotone_write(&self, row: usize, offset: usize, data: &[u8]) -> Result<()> {
        let first = offset / WORD_BYTES;
        let n = data.len().div_ceil(WORD_BYTES);
        let mono = &self.layout.monotone_words;
        let lo = mono.partition_point(|&w| w < first);
        let hi = mono.partition_point(|&w| w < first + n);
        let base = row * self.row_words();
        for &w in &mono[lo..hi] {
            let k = (w - first) * WORD_BYTES;
            let mut bytes = [0u8; WORD_BYTES];
            let part = &data[k..(k + WORD_BYTES).min(data.len())];
            bytes[..part.len()].copy_from_slice(part);
            let value = i64::from_ne_bytes(bytes);
            let old = self.load(base + w);
            if value < old {
                let name = match self.layout.column_at(w * WORD_BYTES) {
                    Some(p) => p.name.clone(),
                    None => w.to_string(),
                };
                return Err(TableError::Peer(format!(
                    "member {} moved {name} back from {old} to {value}",
                    self.members[row]
                )));
            }
        }
        Ok(())
    }

    // -- invariants ---------------------------------------------------------------------------

    /// Verify the whole table: flags are 0/1; no monotone value fell since the last check.
    pub fn check(&self) -> Result<()> {
        let rw = self.row_words();
        let mut values = Vec::with_capacity(self.n_rows() * self.layout.monotone_words.len());
        for row in 0..self.n_rows() {
            for &w in &self.layout.monotone_words {
                values.push(self.load(row * rw + w));
            }
        }
        let per_row = self.layout.monotone_words.len();
        for (k, &value) in values.iter().enumerate() {
            let w = self.layout.monotone_words[k % per_row.max(1)];
            let p = self.layout.column_at(w * WORD_BYTES);
            if p.is_some_and(|p| p.kind == Kind::Flag) && !(value == 0 || value == 1) {
                return Err(TableError::Assertion(format!(
                    "a flag holds {value}: {}",
                    self.which_flag(&values)
                )));
            }
        }
        // A poisoned lock only means a panic elsewhere held it; the floor is still whole.
        let mut floor_lock = self.floor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(floor) = floor_lock.as_ref() {
            for (k, (&value, &old)) in values.iter().zip(floor).enumerate() {
                if value < old {
                    let row = k / per_row;
                    let w = self.layout.monotone_words[k % per_row];
                    let name = self.layout.column_at(w * WORD_BYTES).map_or("?", |p| &p.name);
                    return Err(TableError::Assertion(format!(
                        "{name} of member {} fell from {old} to {value}",
                        self.members[row]
                    )));
                }
            }
        }
        *floor_lock = Some(values);
        Ok(())
    }

    fn which_flag(&self, values: &[i64]) -> String {
        let per_row = self.layout.monotone_words.len().max(1);
        for (k, &value) in values.iter().enumerate() {
            let w = self.layout.monotone_words[k % per_row];
            if let Some(p) = self.layout.column_at(w * WORD_BYTES) {
                if p.kind == Kind::Flag && !(value == 0 || value == 1) {
                    return format!("flag {} of row {} is {value}", p.name, k / per_row);
                }
            }
        }
        "unknown flag".to_owned()
    }
}

/// `[start, end)` inside byte column `p`, or the reference's assertion.
fn byte_range(p: &Placed, start: i64, end: i64) -> Result<(usize, usize)> {
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) if s <= e && e <= p.length => Ok((s, e)),
        _ => Err(TableError::Assertion(format!("('{}', {start}, {end})", p.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> Layout {
        Layout::new(&[
            ColumnSpec::new("heartbeat", Kind::Counter, 1),
            ColumnSpec::new("wedged", Kind::Flag, 1),
            ColumnSpec::new("received", Kind::Vector, 3),
            ColumnSpec::new("slots", Kind::Bytes, 21),
            ColumnSpec::new("seq", Kind::Counter, 1),
        ])
        .unwrap()
    }

    fn table(strict: bool) -> Table {
        Table::new(layout(), &[7, 3, 9], 3, strict).unwrap()
    }

    #[test]
    fn layout_is_word_aligned_and_rows_are_cache_lines() {
        let l = layout();
        let offsets: Vec<_> = l.columns().iter().map(|p| (p.offset, p.end)).collect();
        assert_eq!(offsets, [(0, 8), (8, 16), (16, 40), (40, 64), (64, 72)]);
        assert_eq!(l.row_bytes(), 128);
        assert_eq!(l.monotone_words(), [0, 1, 2, 3, 4, 8]);
        assert_eq!(l.column_at(41).unwrap().name, "slots");
        assert!(l.column_at(72).is_none());
        assert!(l.column_at(1 << 40).is_none());
        assert_eq!(Layout::new(&[ColumnSpec::new("x", Kind::Bytes, 1)]).unwrap().row_bytes(), 64);
    }

    #[test]
    fn bad_layouts_and_members_are_errors() {
        let dup = [ColumnSpec::new("a", Kind::Counter, 1), ColumnSpec::new("a", Kind::Flag, 1)];
        assert!(matches!(Layout::new(&dup), Err(TableError::Assertion(_))));
        assert!(Layout::new(&[ColumnSpec::new("a", Kind::Vector, 0)]).is_err());
        assert!(Layout::new(&[ColumnSpec::new("a", Kind::Counter, 2)]).is_err());
        let huge = [ColumnSpec::new("a", Kind::Bytes, usize::MAX)];
        assert!(matches!(Layout::new(&huge), Err(TableError::Value(_))));
        assert!(Table::new(layout(), &[], 1, false).is_err());
        assert!(Table::new(layout(), &[1, 1], 1, false).is_err());
        assert!(Table::new(layout(), &[1, 2], 3, false).is_err());
        let wide = Layout::new(&[ColumnSpec::new("a", Kind::Bytes, 1 << 29)]).unwrap();
        assert!(matches!(Table::new(wide, &[1, 2, 3], 1, false), Err(TableError::Value(_))));
    }

    #[test]
    fn own_row_writes_and_reads() {
        let t = table(false);
        assert_eq!(t.my_row(), 1);
        t.set("heartbeat", 5).unwrap();
        t.vset("received", 2, 9).unwrap();
        t.bset("slots", 19, b"ab").unwrap();
        t.bset("slots", 3, b"hello world").unwrap();
        assert_eq!(t.get(1, "heartbeat"), Ok(5));
        assert_eq!(t.get(0, "heartbeat"), Ok(0));
        assert_eq!(t.vget(1, "received", 2), Ok(9));
        assert_eq!(t.vrow(1, "received"), Ok(vec![0, 0, 9]));
        assert_eq!(t.bget(1, "slots", 3, 14).unwrap(), b"hello world");
        assert_eq!(t.bget(1, "slots", 19, 21).unwrap(), b"ab");
        assert_eq!(t.bget(1, "slots", 5, 5).unwrap(), b"");
        assert_eq!(t.column_min("heartbeat", None), Ok(0));
        assert_eq!(t.column_min("heartbeat", Some(&[1])), Ok(5));
        assert_eq!(t.vcolumn_min("received", 2, Some(&[1, 1])), Ok(9));
    }

    #[test]
    fn own_row_rules_are_errors() {
        let t = table(false);
        t.set("heartbeat", 5).unwrap();
        let e = t.set("heartbeat", 4).unwrap_err();
        assert_eq!(e, TableError::Assertion("column heartbeat would decrease from 5 to 4".into()));
        assert_eq!(t.set("wedged", 2), Err(TableError::Assertion("('wedged', 2)".into())));
        assert_eq!(t.set("nope", 2), Err(TableError::Key("nope".into())));
        assert!(matches!(t.vset("received", 3, 1), Err(TableError::Assertion(_))));
        assert!(matches!(t.vset("received", -1, 1), Err(TableError::Assertion(_))));
        assert!(matches!(t.vget(0, "slots", 3), Err(TableError::Assertion(_))));
        assert!(matches!(t.bset("heartbeat", 0, b"x"), Err(TableError::Assertion(_))));
        assert!(matches!(t.bset("slots", 20, b"xy"), Err(TableError::Assertion(_))));
        assert!(matches!(t.bset("slots", i64::MAX, b"xy"), Err(TableError::Assertion(_))));
        assert!(matches!(t.bget(0, "slots", 3, 2), Err(TableError::Assertion(_))));
        assert!(matches!(t.get(3, "heartbeat"), Err(TableError::Index(_))));
        assert!(matches!(t.get(-1, "heartbeat"), Err(TableError::Index(_))));
        assert!(matches!(t.row_bytes_of(i64::MIN), Err(TableError::Index(_))));
        assert!(matches!(t.column_min("heartbeat", Some(&[])), Err(TableError::Value(_))));
        assert!(matches!(t.push_bytes("slots", 4, 4), Err(TableError::Assertion(_))));
    }

    #[test]
    fn push_merges_adjacent_columns() {
        let t = table(false);
        t.set("heartbeat", 1).unwrap();
        t.set("seq", 2).unwrap();
        let w = t.push(&["seq", "wedged", "heartbeat"]).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].offset, w[0].data.len()), (0, 16));
        assert_eq!((w[1].offset, w[1].data.clone()), (64, 2i64.to_ne_bytes().to_vec()));
        assert_eq!(t.push(&["received", "received"]).unwrap()[0].data.len(), 24);
        assert!(t.push::<&str>(&[]).unwrap().is_empty());
        assert!(matches!(t.push(&["x"]), Err(TableError::Key(_))));
        let w = t.push_bytes("slots", 3, 9).unwrap();
        assert_eq!((w.offset, w.data.len()), (40, 16));
        let w = t.push_bytes("slots", 17, 21).unwrap();
        assert_eq!((w.offset, w.data.len()), (56, 8));
        assert_eq!(t.push_row().data.len(), 128);
    }

    #[test]
    fn peer_writes_and_their_errors() {
        let t = table(true);
        t.apply_write(0, 0, &7i64.to_ne_bytes()).unwrap();
        assert_eq!(t.get(0, "heartbeat"), Ok(7));
        let e = t.apply_write(0, 0, &6i64.to_ne_bytes()).unwrap_err();
        assert_eq!(e, TableError::Peer("member 7 moved heartbeat back from 7 to 6".into()));
        assert_eq!(t.get(0, "heartbeat"), Ok(7), "a rejected write changes nothing");
        let e = t.apply_write(1, 0, &[0; 8]).unwrap_err();
        assert_eq!(e, TableError::Peer("a peer wrote into my own row".into()));
        let e = t.apply_write(3, 0, &[0; 8]).unwrap_err();
        assert_eq!(e, TableError::Peer("write for row 3, the table has 3 rows".into()));
        for (offset, len) in [(-8, 8), (4, 8), (128, 1), (120, 9), (i64::MAX, 8), (i64::MIN, 0)] {
            assert!(matches!(t.apply_write(2, offset, &vec![0; len]), Err(TableError::Peer(_))));
        }
        // byte slots are not monotone; an empty write is fine
        t.apply_write(2, 40, &[0xff; 24]).unwrap();
        t.apply_write(2, 40, &[0; 24]).unwrap();
        t.apply_write(2, 120, &[]).unwrap();
        // a truncated write into a counter is compared padded with zeros, as the reference does
        t.apply_write(2, 64, &[5]).unwrap();
        assert_eq!(t.get(2, "seq"), Ok(5));
        assert!(t.apply_write(2, 64, &[4]).is_err());
        t.apply_write(2, 24, &5i64.to_ne_bytes()).unwrap();
        let e = t.apply_write(2, 16, &[1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("received"), "{e}");
    }

    #[test]
    fn check_catches_bad_flags_and_falls() {
        let t = table(false);
        t.check().unwrap();
        t.apply_write(2, 8, &3i64.to_ne_bytes()).unwrap();
        let e = t.check().unwrap_err();
        assert_eq!(e, TableError::Assertion("a flag holds 3: flag wedged of row 2 is 3".into()));
        t.apply_write(2, 8, &1i64.to_ne_bytes()).unwrap();
        t.check().unwrap();
        t.apply_write(2, 8, &0i64.to_ne_bytes()).unwrap();
        let e = t.check().unwrap_err();
        assert_eq!(e, TableError::Assertion("wedged of member 9 fell from 1 to 0".into()));
        let only_bytes = Table::new(
            Layout::new(&[ColumnSpec::new("b", Kind::Bytes, 8)]).unwrap(),
            &[1],
            1,
            true,
        )
        .unwrap();
        only_bytes.check().unwrap();
        only_bytes.check().unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(usize, i64),
        Vset(i64, i64),
        Bset(i64, Vec<u8>),
        Peer(i64, i64, Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..2usize, -2..40i64).prop_map(|(c, v)| Op::Set(c, v)),
            (-1..4i64, -2..40i64).prop_map(|(i, v)| Op::Vset(i, v)),
            (-2..24i64, proptest::collection::vec(any::<u8>(), 0..10))
                .prop_map(|(s, d)| Op::Bset(s, d)),
            (-1..4i64, -16..136i64, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(r, o, d)| Op::Peer(r, o, d)),
        ]
    }

    proptest! {
        /// Whatever the sequence of writes, nothing panics, a strict table never lets a monotone
        /// value fall, and a rejected write changes nothing.
        #[test]
        fn strict_tables_stay_monotone(ops in proptest::collection::vec(op(), 0..60)) {
            let t = table(true);
            let monotone = |t: &Table| -> Vec<i64> {
                (0..3).flat_map(|r| t.layout().monotone_words().iter().map(move |&w| (r, w)))
                    .map(|(r, w)| t.load(r * t.row_words() + w)).collect()
            };
            let mut floor = monotone(&t);
            for op in ops {
                let before = t.read_bytes(0, t.byte_len());
                let r = match &op {
                    Op::Set(c, v) => t.set(["heartbeat", "wedged"][*c], *v),
                    Op::Vset(i, v) => t.vset("received", *i, *v),
                    Op::Bset(s, d) => t.bset("slots", *s, d),
                    Op::Peer(r, o, d) => t.apply_write(*r, *o, d),
                };
                if r.is_err() {
                    prop_assert_eq!(&before, &t.read_bytes(0, t.byte_len()));
                }
                if let (Op::Peer(..), Err(e)) = (&op, &r) {
                    prop_assert!(matches!(e, TableError::Peer(_)), "{:?}", e);
                }
                let now = monotone(&t);
                prop_assert!(now.iter().zip(&floor).all(|(a, b)| a >= b));
                floor = now;
            }
        }

        /// A peer write that is accepted lands byte for byte in the peer's row, and a push of my
        /// row applied at a peer reproduces my row there.
        #[test]
        fn writes_round_trip(offset in 0..16usize, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let t = table(false);
            let offset = offset * WORD_BYTES;
            let r = t.apply_write(2, offset as i64, &data);
            prop_assert_eq!(r.is_ok(), offset + data.len() <= 128);
            if r.is_ok() {
                prop_assert_eq!(&t.row_bytes_of(2).unwrap()[offset..offset + data.len()], &data[..]);
            }
            let me = table(false);
            me.bset("slots", 0, &data[..data.len().min(21)]).unwrap();
            me.set("seq", data.len() as i64).unwrap();
            let peer = Table::new(layout(), &[7, 3, 9], 9, true).unwrap();
            for w in me.push(&["heartbeat", "wedged", "received", "slots", "seq"]).unwrap() {
                peer.apply_write(1, w.offset as i64, &w.data).unwrap();
            }
            prop_assert_eq!(peer.row_bytes_of(1).unwrap(), me.row_bytes_of(1).unwrap());
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The stable smoke run of the fuzz target (`fuzz/fuzz_targets/apply_write.rs` runs the
        /// same function under libFuzzer): any bytes are accepted or a peer error, never a panic.
        #[test]
        fn apply_write_fuzz_smoke(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            crate::fuzzing::apply_write_one(&data);
        }
    }
}
