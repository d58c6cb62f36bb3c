//! Input mutations in the manner of libFuzzer's: byte-level edits (bit
//! flips, interesting values, big-endian length fields, inserted and
//! erased ranges, dictionary words, crossover with another seed) plus,
//! for structured inputs, edits of the structure itself (a JSON node
//! replaced by a value of another type, a huge or NUL-laden string, a key
//! removed or added; a JWT segment decoded, mutated and re-encoded), so
//! that mutated inputs get past the first parser and reach the checks
//! behind it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::Shape;

/// Inputs never grow past this (the service's body limit is larger, but
/// the interesting edges are near the seeds' sizes).
pub const MAX_LEN: usize = 256 * 1024;

/// A seeded mutator: the same seed gives the same sequence of inputs.
pub struct Mutator {
    rng: fastrand::Rng,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    pub fn new(seed: u64, dictionary: Vec<Vec<u8>>) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            dictionary,
        }
    }

    /// A mutant of `input`: one to four edits, structured ones for
    /// structured shapes half of the time. `others` are for crossover.
    pub fn mutate(&mut self, input: &[u8], shape: Shape, others: &[Vec<u8>]) -> Vec<u8> {
        let mut output = input.to_vec();
        for _ in 0..self.rng.usize(1..=4) {
            let structured = self.rng.bool();
            output = match shape {
                Shape::Json if structured => self.json_edit(&output),
                Shape::NsidAndJson | Shape::NsidAndQuery if structured => {
                    let (nsid, rest) = split_first_line(&output);
                    let rest = if shape == Shape::NsidAndJson {
                        self.json_edit(rest)
                    } else {
                        self.query_edit(rest)
                    };
                    [nsid, b"\n", &rest].concat()
                }
                Shape::Jwt if structured => self.jwt_edit(&output),
                _ => {
                    self.byte_edit(&mut output, others);
                    output
                }
            };
        }
        output.truncate(MAX_LEN);
        output
    }

    // ---- bytes ----------------------------------------------------------

    fn byte_edit(&mut self, data: &mut Vec<u8>, others: &[Vec<u8>]) {
        let rng = &mut self.rng;
        let len = data.len();
        match rng.u8(0..10) {
            0 if len > 0 => {
                let at = rng.usize(..len);
                data[at] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let at = rng.usize(..len);
                data[at] = rng.u8(..);
            }
            2 if len > 0 => {
                let at = rng.usize(..len);
                data[at] = *pick(rng, &[0, 1, 0x7f, 0x80, 0xfe, 0xff]);
            }
            // TLS length fields and counters are big-endian u8/u16/u32/varint.
            3 if len >= 4 => {
                let at = rng.usize(..len - 3);
                let value: u32 = *pick(
                    rng,
                    &[0, 1, 0x3f, 0x40, 0x7fff, 0xffff, 0x4000_0000, u32::MAX],
                );
                data[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            4 => {
                let at = rng.usize(..=len);
                let count = rng.usize(1..=16);
                let bytes: Vec<u8> = (0..count).map(|_| rng.u8(..)).collect();
                data.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let start = rng.usize(..len);
                let end = rng.usize(start..=len.min(start + 64));
                data.drain(start..end);
            }
            6 if len > 0 => {
                let start = rng.usize(..len);
                let end = rng.usize(start..=len.min(start + 64));
                let copy = data[start..end].to_vec();
                let at = rng.usize(..=len);
                data.splice(at..at, copy);
            }
            7 if !self.dictionary.is_empty() => {
                let word = pick(rng, &self.dictionary).clone();
                let at = rng.usize(..=len);
                data.splice(at..at, word);
            }
            8 if !others.is_empty() => {
                // Crossover: our head, another input's tail.
                let other = pick(rng, others);
                let cut = rng.usize(..=len);
                let from = rng.usize(..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => data.truncate(rng.usize(..len)),
            _ => data.push(rng.u8(..)),
        }
    }

    // ---- JSON -----------------------------------------------------------

    /// Edits one node of a JSON document; bytes that are not JSON get a
    /// byte edit instead.
    fn json_edit(&mut self, data: &[u8]) -> Vec<u8> {
        let Ok(mut document) = serde_json::from_slice::<Value>(data) else {
            let mut data = data.to_vec();
            self.byte_edit(&mut data, &[]);
            return data;
        };
        let mut pointers = Vec::new();
        collect_pointers(&document, String::new(), &mut pointers);
        let pointer = pick(&mut self.rng, &pointers).clone();
        let replacement = self.odd_value();
        let key = self.word();
        if let Some(node) = document.pointer_mut(&pointer) {
            match (self.rng.u8(0..4), node) {
                (0, Value::Object(object)) if !object.is_empty() => {
                    let index = self.rng.usize(..object.len());
                    let name = object.keys().nth(index).cloned().unwrap_or_default();
                    object.remove(&name);
                }
                (1, Value::Object(object)) => {
                    object.insert(key, replacement);
                }
                (0 | 1, Value::Array(items)) if !items.is_empty() => {
                    let index = self.rng.usize(..items.len());
                    if self.rng.bool() {
                        items.remove(index);
                    } else {
                        let copy = items[index].clone();
                        items.insert(index, copy);
                    }
                }
                (_, node) => *node = replacement,
            }
        }
        serde_json::to_vec(&document).unwrap_or_else(|_| data.to_vec())
    }

    /// A value of some JSON type, often one that breaks a constraint.
    fn odd_value(&mut self) -> Value {
        let rng = &mut self.rng;
        match rng.u8(0..14) {
            0 => Value::Null,
            1 => Value::Bool(rng.bool()),
            // Integer edges, and the ends of the time range a timestamp
            // can be read into (seconds; year 262143 and -262144).
            2 => Value::from(*pick(
                rng,
                &[
                    0,
                    -1,
                    1,
                    i64::MIN,
                    i64::MAX,
                    1 << 53,
                    i64::from(i32::MAX),
                    8_210_266_876_799,
                    -8_334_601_228_800,
                ],
            )),
            3 => Value::from(*pick(rng, &[0.5, -0.0, 1e308, -1e308, 9007199254740993.0])),
            4 => Value::String(String::new()),
            5 => Value::String("\0".repeat(rng.usize(1..4))),
            6 => Value::String("a".repeat(rng.usize(100..100_000))),
            7 => Value::String("\u{1F469}\u{200D}\u{1F4BB}\u{0301}".repeat(rng.usize(1..500))),
            8 => Value::Array(Vec::new()),
            9 => Value::Object(Map::new()),
            10 => {
                serde_json::json!({ "$bytes": pick(rng, &["", "!!", "AAA", "AA==", "AQID", "_-8"]) })
            }
            11 => {
                serde_json::json!({ "$type": pick(rng, &["", "#", "blue.catbird.mls.defs#nope", "\0"]) })
            }
            12 => Value::String(String::from_utf8_lossy(&self.word_bytes()).into_owned()),
            _ => Value::String(
                pick(
                    rng,
                    &[
                        "did:plc:",
                        "did:web:x",
                        "at://",
                        "2025-13-01T00:00:00Z",
                        "\u{FEFF}",
                        "\u{D7FF}",
                    ],
                )
                .to_string(),
            ),
        }
    }

    // ---- query strings and JWTs ------------------------------------------

    fn query_edit(&mut self, query: &[u8]) -> Vec<u8> {
        let mut query = query.to_vec();
        const VALUES: &[&str] = &[
            "",
            "1",
            "-1",
            "99999999999999999999",
            "true",
            "yes",
            "%00",
            "%ff%fe",
            "%",
            "a+b",
            "did:plc:x",
        ];
        let value = pick(&mut self.rng, VALUES).as_bytes();
        let key = self.word_bytes();
        if !query.is_empty() {
            query.push(b'&');
        }
        query.extend_from_slice(&key);
        if self.rng.u8(0..4) != 0 {
            query.push(b'=');
            query.extend_from_slice(value);
        }
        query
    }

    fn jwt_edit(&mut self, token: &[u8]) -> Vec<u8> {
        let mut segments: Vec<Vec<u8>> = token.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
        let index = self.rng.usize(..segments.len());
        let decoded = URL_SAFE_NO_PAD.decode(&segments[index]);
        segments[index] = match decoded {
            Ok(bytes) => {
                let mutated = if serde_json::from_slice::<Value>(&bytes).is_ok() {
                    self.json_edit(&bytes)
                } else {
                    let mut bytes = bytes;
                    self.byte_edit(&mut bytes, &[]);
                    bytes
                };
                URL_SAFE_NO_PAD.encode(mutated).into_bytes()
            }
            Err(_) => {
                let mut raw = segments[index].clone();
                self.byte_edit(&mut raw, &[]);
                raw
            }
        };
        segments.join(&b'.')
    }

    // ---- words ----------------------------------------------------------

    fn word_bytes(&mut self) -> Vec<u8> {
        if self.dictionary.is_empty() {
            return b"x".to_vec();
        }
        pick(&mut self.rng, &self.dictionary).clone()
    }

    fn word(&mut self) -> String {
        String::from_utf8_lossy(&self.word_bytes()).into_owned()
    }
}

/// The first line (without its newline) and the rest.
pub fn split_first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// Every node's JSON pointer, the root's (`""`) first.
fn collect_pointers(value: &Value, pointer: String, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                collect_pointers(child, format!("{pointer}/{escaped}"), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_pointers(child, format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
    out.push(pointer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let input = br#"{"a":[1,2,{"b":"c"}],"d":true}"#;
        let run = |seed| {
            let mut mutator = Mutator::new(seed, vec![b"word".to_vec()]);
            (0..50)
                .map(|_| mutator.mutate(input, Shape::Json, &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn structured_edits_keep_json_parseable() {
        let input = br#"{"a":[1,2,{"b":"c"}],"d":true}"#;
        let mut mutator = Mutator::new(1, vec![b"word".to_vec()]);
        let parseable = (0..200)
            .filter(|_| serde_json::from_slice::<Value>(&mutator.json_edit(input)).is_ok())
            .count();
        assert_eq!(parseable, 200);
    }

    #[test]
    fn jwt_edits_keep_three_segments() {
        let token = b"eyJhbGciOiJFUzI1NksifQ.eyJpc3MiOiJkaWQ6cGxjOngifQ.c2ln";
        let mut mutator = Mutator::new(3, Vec::new());
        for _ in 0..100 {
            let mutant = mutator.jwt_edit(token);
            assert_eq!(mutant.iter().filter(|&&b| b == b'.').count(), 2);
        }
    }
}
