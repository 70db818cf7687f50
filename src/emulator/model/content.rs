//! The content store of one connector: files with a type and tags (exosite-platform.md §3.10,
//! §5.5). Held in memory; served to devices by `/provision/download` and managed through the
//! management API, GraphQL `createContent` and the object store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use serde::Serialize;

use super::ModelError;

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentItem {
    /// Content id (file name).
    pub id: String,
    /// MIME type.
    pub content_type: String,
    /// The bytes.
    pub data: Bytes,
    /// Tags (values are strings).
    pub tags: BTreeMap<String, String>,
    /// Last upload, µs since the epoch.
    pub last_modified: i64,
}

/// Content info as the management API returns it: `{type, length, last_modified, id, tags}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentInfo {
    /// MIME type.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Size in bytes.
    pub length: u64,
    /// ISO 8601 UTC with milliseconds, `2017-02-10T17:43:45.000Z`.
    pub last_modified: String,
    /// Content id.
    pub id: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl ContentItem {
    /// The management API's info object for this item.
    pub fn info(&self) -> ContentInfo {
        ContentInfo {
            content_type: self.content_type.clone(),
            length: self.data.len() as u64,
            last_modified: iso8601_millis(self.last_modified),
            id: self.id.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The device API's info line: `<type>,<size>,<updated s>,<description>` where the
    /// description is the `description` tag with commas and line breaks replaced by spaces.
    pub fn device_info_line(&self) -> String {
        let description: String = self
            .tags
            .get("description")
            .map(|d| {
                d.chars()
                    .map(|c| {
                        if matches!(c, ',' | '\n' | '\r') {
                            ' '
                        } else {
                            c
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{},{},{},{}",
            self.content_type,
            self.data.len(),
            self.last_modified.div_euclid(1_000_000),
            description
        )
    }
}

/// A byte range of a file, inclusive on both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub first: u64,
    /// Last byte (inclusive).
    pub last: u64,
}

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not a `bytes=` range this server understands; the whole file is served instead.
    #[error("unsupported Range header {0:?}")]
    Unsupported(String),
    /// The range lies outside the file: `416`.
    #[error("range not satisfiable for a file of {total} bytes")]
    NotSatisfiable {
        /// File size.
        total: u64,
    },
}

impl ByteRange {
    /// Parses one `Range: bytes=X-Y | -Y | X-` against a file of `total` bytes.
    pub fn parse(header: &str, total: u64) -> Result<ByteRange, RangeError> {
        let unsupported = || RangeError::Unsupported(header.to_string());
        let spec = header
            .trim()
            .strip_prefix("bytes=")
            .ok_or_else(unsupported)?
            .trim();
        if spec.contains(',') {
            return Err(unsupported());
        }
        let (a, b) = spec.split_once('-').ok_or_else(unsupported)?;
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| s.parse::<u64>().map_err(|_| unsupported());
        let not_satisfiable = RangeError::NotSatisfiable { total };
        match (a.is_empty(), b.is_empty()) {
            (true, true) => Err(unsupported()),
            (true, false) => {
                let n = num(b)?;
                if n == 0 || total == 0 {
                    return Err(not_satisfiable);
                }
                Ok(ByteRange {
                    first: total.saturating_sub(n),
                    last: total - 1,
                })
            }
            (false, true) => {
                let first = num(a)?;
                if first >= total {
                    return Err(not_satisfiable);
                }
                Ok(ByteRange {
                    first,
                    last: total - 1,
                })
            }
            (false, false) => {
                let (first, last) = (num(a)?, num(b)?);
                if first > last {
                    return Err(unsupported());
                }
                if first >= total {
                    return Err(not_satisfiable);
                }
                Ok(ByteRange {
                    first,
                    last: last.min(total - 1),
                })
            }
        }
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The content items of one connector.
#[derive(Debug, Default)]
pub struct ContentStore {
    items: RwLock<BTreeMap<String, Arc<ContentItem>>>,
    max_bytes: usize,
}

impl ContentStore {
    /// An empty store that refuses files over `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        ContentStore {
            items: RwLock::new(BTreeMap::new()),
            max_bytes,
        }
    }

    /// Largest file accepted, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Stores (or replaces, body and tags) an item.
    pub fn put(&self, item: ContentItem) -> Result<(), ModelError> {
        if item.id.is_empty() {
            return Err(ModelError::Invalid("content id must not be empty".into()));
        }
        if item.data.len() > self.max_bytes {
            return Err(ModelError::Invalid(format!(
                "content {:?} is {} bytes, over the limit of {} bytes",
                item.id,
                item.data.len(),
                self.max_bytes
            )));
        }
        self.items
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(item.id.clone(), Arc::new(item));
        Ok(())
    }

    /// The item with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ContentItem>> {
        self.items
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every item, sorted by id.
    pub fn list(&self) -> Vec<Arc<ContentItem>> {
        self.items
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Removes an item; false if there was none.
    pub fn delete(&self, id: &str) -> bool {
        self.items
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// Removes every item; returns the ids removed.
    pub fn clear(&self) -> Vec<String> {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        let ids = items.keys().cloned().collect();
        items.clear();
        ids
    }

    /// Bytes `range` of item `id` (the whole file for `None`), sharing the stored buffer.
    pub fn read(&self, id: &str, range: Option<ByteRange>) -> Result<Bytes, ModelError> {
        let item = self
            .get(id)
            .ok_or_else(|| ModelError::UnknownContent(id.to_string()))?;
        Ok(match range {
            None => item.data.clone(),
            Some(r) => {
                let end = usize::try_from(r.last + 1)
                    .unwrap_or(usize::MAX)
                    .min(item.data.len());
                let start = usize::try_from(r.first).unwrap_or(usize::MAX).min(end);
                item.data.slice(start..end)
            }
        })
    }
}

/// Formats µs since the epoch as ISO 8601 UTC with milliseconds.
pub fn iso8601_millis(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_match_the_contract_example() {
        // 2017-02-10T17:43:45.000Z
        assert_eq!(
            iso8601_millis(1_486_748_625_000_000),
            "2017-02-10T17:43:45.000Z"
        );
        assert_eq!(iso8601_millis(1_234), "1970-01-01T00:00:00.001Z");
        assert_eq!(
            iso8601_millis(951_782_400_123_000),
            "2000-02-29T00:00:00.123Z"
        );
    }

    #[test]
    fn ranges_of_all_forms() {
        let p = |h| ByteRange::parse(h, 10);
        assert_eq!(p("bytes=0-3"), Ok(ByteRange { first: 0, last: 3 }));
        assert_eq!(p("bytes=-4"), Ok(ByteRange { first: 6, last: 9 }));
        assert_eq!(p("bytes=-40"), Ok(ByteRange { first: 0, last: 9 }));
        assert_eq!(p("bytes=7-"), Ok(ByteRange { first: 7, last: 9 }));
        assert_eq!(p("bytes=5-100"), Ok(ByteRange { first: 5, last: 9 }));
        assert_eq!(
            p("bytes=10-"),
            Err(RangeError::NotSatisfiable { total: 10 })
        );
        assert_eq!(
            p("bytes=10-12"),
            Err(RangeError::NotSatisfiable { total: 10 })
        );
        assert_eq!(p("bytes=-0"), Err(RangeError::NotSatisfiable { total: 10 }));
        assert!(matches!(p("items=0-1"), Err(RangeError::Unsupported(_))));
        assert!(matches!(
            p("bytes=0-1,3-4"),
            Err(RangeError::Unsupported(_))
        ));
        assert!(matches!(p("bytes=4-2"), Err(RangeError::Unsupported(_))));
    }

    #[test]
    fn info_line_cleans_the_description() {
        let item = ContentItem {
            id: "f".into(),
            content_type: "image/png".into(),
            data: Bytes::from_static(b"12345"),
            tags: BTreeMap::from([("description".into(), "a,b\nc".into())]),
            last_modified: 1_462_500_951_000_001,
        };
        assert_eq!(item.device_info_line(), "image/png,5,1462500951,a b c");
    }
}
