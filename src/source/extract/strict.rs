//! CSV files read with a strict quoting rule (DuckDB's): the `csv` crate splits records
//! (RFC 4180) and forgives what it should not: text after a closing quote is appended to the
//! field (`"ab"c` reads as `abc`), and an unclosed quote runs on over the following lines,
//! swallowing their records into one field. Both read silently as something else.
//!
//! [`CsvFile`] keeps the raw bytes the parser reads ([`Tee`]) until each record is checked
//! against the rule ([`check_quotes`]): after a closing quote only the delimiter or the end of
//! the record may follow, and a quoted field may span lines only when the source allows it
//! (`multiline: true`, Spark's `multiLine`). A record that breaks the rule is a bad row at its
//! own line. Records without a quote character (most of them) pass at once.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use csv::ByteRecord;

use crate::config::SourceOptions;
use crate::error::{Error, Result};

/// Bytes of the CSV parser's own buffer (it reads the file in blocks of this size).
const BUFFER_BYTES: usize = 1 << 20;

/// Why a record breaks the quoting rule.
pub(crate) const TEXT_AFTER_QUOTE: &str =
    "text after a closing quote (only the delimiter or the end of the record may follow one)";
/// Why a record breaks the quoting rule.
pub(crate) const QUOTE_SPANS_LINES: &str =
    "a quoted field spans lines: an unclosed quote? (set `multiline: true` if fields hold line breaks)";
/// Why a record breaks the quoting rule.
pub(crate) const UNCLOSED_QUOTE: &str = "a quote is not closed before the end of the file";

/// The bytes read from a file that its records may still need, and the file offset of the
/// first of them.
#[derive(Debug, Default)]
struct Raw {
    bytes: Vec<u8>,
    start: u64,
}

/// A reader that keeps a copy of what it reads, for [`CsvFile`] to check records against
/// (through the CSV reader that owns it: no lock on the path of every record).
pub(crate) struct Tee<R> {
    inner: R,
    raw: Raw,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.raw.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// A CSV file whose records are checked against the strict quoting rule as they are read.
pub(crate) struct CsvFile {
    reader: csv::Reader<Tee<File>>,
    delimiter: u8,
    quote: u8,
    multiline: bool,
}

impl CsvFile {
    /// Opens `path` with the source's delimiter and quote; records of any length are returned
    /// (their field count is checked by the caller, which can name the line).
    ///
    /// # Errors
    /// [`Error::Input`] when the file cannot be opened.
    pub(crate) fn open(source: &SourceOptions, path: &Path) -> Result<Self> {
        let handle = File::open(path).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            reason: format!("cannot open: {e}"),
        })?;
        let tee = Tee {
            inner: handle,
            raw: Raw::default(),
        };
        let reader = csv::ReaderBuilder::new()
            .delimiter(source.delimiter)
            .quote(source.quote)
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(BUFFER_BYTES)
            .from_reader(tee);
        Ok(CsvFile {
            reader,
            delimiter: source.delimiter,
            quote: source.quote,
            multiline: source.multiline,
        })
    }

    /// Reads the next record into `record`: None at the end of the file, else whether it
    /// breaks the quoting rule (the reason).
    ///
    /// # Errors
    /// The CSV reader's errors (I/O).
    pub(crate) fn read(&mut self, record: &mut ByteRecord) -> Result<Option<Option<&'static str>>> {
        if !self.reader.read_byte_record(record)? {
            return Ok(None);
        }
        let start = record.position().map_or(0, |p| p.byte());
        let end = self.reader.position().byte();
        let raw = &mut self.reader.get_mut().raw;
        let from = (start.saturating_sub(raw.start)) as usize;
        let to = (end.saturating_sub(raw.start) as usize).min(raw.bytes.len());
        let bad = raw
            .bytes
            .get(from..to)
            .and_then(|bytes| check_quotes(bytes, self.delimiter, self.quote, self.multiline));
        // What this record used is not needed again (the parser may have read further): drop
        // it once it is most of the copy, so each byte is moved at most about once.
        if to > BUFFER_BYTES && to * 2 > raw.bytes.len() {
            raw.bytes.drain(..to);
            raw.start += to as u64;
        }
        Ok(Some(bad))
    }

    /// The byte offset of the next record.
    pub(crate) fn position(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// Checks one record's raw bytes (its terminator included) against the strict quoting rule;
/// the reason when it breaks it. A quote is special only at the start of a field.
pub(crate) fn check_quotes(
    raw: &[u8],
    delimiter: u8,
    quote: u8,
    multiline: bool,
) -> Option<&'static str> {
    // `contains` on bytes is a memchr: records without a quote pass at once.
    if !raw.contains(&quote) {
        return None;
    }
    // The parser ends a record at its `\r` and takes the `\n` (and blank lines) with the next
    // one, whose bytes then start with them; a file may start with a UTF-8 byte order mark.
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(raw.len());
    let raw = &raw[start..];
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        /// A quote inside a quoted field: closing it, or the first of an escaped pair.
        QuoteInQuoted,
        /// The record's terminator was reached.
        Ended,
    }
    let mut state = State::FieldStart;
    for &b in raw {
        state = match state {
            State::FieldStart | State::Unquoted if b == b'\n' || b == b'\r' => State::Ended,
            State::FieldStart if b == quote => State::Quoted,
            State::FieldStart | State::Unquoted if b == delimiter => State::FieldStart,
            State::FieldStart | State::Unquoted => State::Unquoted,
            State::Quoted if b == quote => State::QuoteInQuoted,
            State::Quoted if (b == b'\n' || b == b'\r') && !multiline => {
                return Some(QUOTE_SPANS_LINES)
            }
            State::Quoted => State::Quoted,
            State::QuoteInQuoted if b == quote => State::Quoted,
            State::QuoteInQuoted if b == delimiter => State::FieldStart,
            State::QuoteInQuoted if b == b'\n' || b == b'\r' => State::Ended,
            State::QuoteInQuoted => return Some(TEXT_AFTER_QUOTE),
            State::Ended => State::Ended,
        };
    }
    (state == State::Quoted).then_some(UNCLOSED_QUOTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, multiline: bool) -> Option<&'static str> {
        check_quotes(raw.as_bytes(), b',', b'"', multiline)
    }

    #[test]
    fn the_strict_quoting_rule() {
        for good in [
            "a,\"b\",c\n",
            "a,\"b\"\"c\",d\n",
            "\"\",x\n",
            "a,\"\"\r\n",
            "a,b\"c,d\n",
            "a,\"b,c\"",
            "plain,row\n",
        ] {
            assert_eq!(check(good, false), None, "{good:?}");
        }
        assert_eq!(check("a,\"b\"c,d\n", false), Some(TEXT_AFTER_QUOTE));
        assert_eq!(check("a,\"b\" ,d\n", false), Some(TEXT_AFTER_QUOTE));
        assert_eq!(check("a,\"b\nc\",d\n", false), Some(QUOTE_SPANS_LINES));
        assert_eq!(check("a,\"b\r\nc\",d\n", false), Some(QUOTE_SPANS_LINES));
        assert_eq!(check("a,\"b\nc\",d\n", true), None);
        assert_eq!(check("a,\"open", false), Some(UNCLOSED_QUOTE));
        assert_eq!(check("a,\"open\nb,2\n", true), Some(UNCLOSED_QUOTE));
        // CRLF files and blank lines: the terminator of the record before, then this one.
        assert_eq!(check("\n1,\"a\"b\r", false), Some(TEXT_AFTER_QUOTE));
        assert_eq!(check("\n\n1,\"a\"b\n", false), Some(TEXT_AFTER_QUOTE));
        assert_eq!(check("\n2,\"x\r\ny\"\r", false), Some(QUOTE_SPANS_LINES));
        assert_eq!(check("\r\n3,\"ok\"\r", false), None);
        // A byte order mark before the first record.
        assert_eq!(check("\u{feff}\"a,\"\"b\",c\n", false), None);
        assert_eq!(check("\u{feff}\"a\"b,c\n", false), Some(TEXT_AFTER_QUOTE));
        // Other delimiters and quotes.
        assert_eq!(
            check_quotes(b"a;'b'c\n", b';', b'\'', false),
            Some(TEXT_AFTER_QUOTE)
        );
        assert_eq!(check_quotes(b"a;'b;c'\n", b';', b'\'', false), None);
    }

    /// Each record's raw bytes as the reader slices them, CRLF and blank lines included.
    #[test]
    fn crlf_files_are_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "id,v\r\n1,\"a\"b\r\n\r\n2,\"x\r\ny\"\r\n3,\"ok\"\r\n",
        )
        .unwrap();
        let mut file = CsvFile::open(&source(), &path).unwrap();
        let mut record = ByteRecord::new();
        let mut got = Vec::new();
        while let Some(quoting) = file.read(&mut record).unwrap() {
            got.push(quoting);
        }
        assert_eq!(
            got,
            [None, Some(TEXT_AFTER_QUOTE), Some(QUOTE_SPANS_LINES), None]
        );
    }

    fn source() -> SourceOptions {
        SourceOptions {
            format: None,
            delimiter: b',',
            quote: b'"',
            header: false,
            null_value: None,
            on_error: crate::config::OnError::Fail,
            multiline: false,
        }
    }

    #[test]
    fn records_are_checked_as_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let mut text = String::new();
        // Over 2 MiB: the copy of the raw bytes is compacted on the way.
        for i in 0..200_000 {
            text.push_str(&format!("k{i},\"v,{i}\"\n"));
        }
        text.push_str("bad,\"x\"y\n");
        text.push_str("after,1\n");
        text.push_str("open,\"never\nclosed,2\n");
        std::fs::write(&path, text).unwrap();
        let mut file = CsvFile::open(&source(), &path).unwrap();
        let mut record = ByteRecord::new();
        let mut bad = Vec::new();
        let mut rows = 0;
        while let Some(quoting) = file.read(&mut record).unwrap() {
            rows += 1;
            if let Some(reason) = quoting {
                bad.push((record.position().unwrap().line(), reason));
            }
        }
        assert_eq!(rows, 200_003);
        assert_eq!(
            bad,
            [(200_001, TEXT_AFTER_QUOTE), (200_003, QUOTE_SPANS_LINES)]
        );
    }
}
