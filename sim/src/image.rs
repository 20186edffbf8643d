//! The simulator's fake IOS-XE image format.
//!
//! ```text
//! +--------------------------------------+ 0
//! | header: `KEY=value\n` lines, NUL pad  |   CW_BEGIN, CW_IMAGE, CW_FAMILY,
//! |                                      |   CW_FULL_VERSION, CW_VERSION, CW_SIZE
//! +--------------------------------------+ 1024
//! | body: deterministic 64 KiB blocks     |
//! +--------------------------------------+ size - 128
//! | trailer: CW_IMAGE_SHA256=<hex>\n, pad |   sha256 of every byte before it
//! +--------------------------------------+ size
//! ```
//!
//! Like a real `cat9k_iosxe.*.SPA.bin`, the full build version sits in the
//! first KiB (`head -c 1024 img.bin | strings | grep CW_FULL` finds it). The
//! trailer lets the receiver check integrity while it streams, without a
//! second pass, and without holding the image in memory.

use std::io::Write;

use sha2::{Digest, Sha256};

/// Size of the header block.
pub const HEADER_LEN: usize = 1024;
/// Size of the trailer block.
pub const TRAILER_LEN: usize = 128;
/// Smallest valid image.
pub const MIN_IMAGE_LEN: u64 = (HEADER_LEN + TRAILER_LEN) as u64;
/// Body block size; also the chunk size of [`ImageChunks`].
pub const BLOCK_LEN: usize = 64 * 1024;
const TRAILER_KEY: &str = "CW_IMAGE_SHA256=";

/// What an image says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSpec {
    /// Full build version (`17.18.02.0.4112.1766116039`).
    pub version: String,
    /// Platform family (`cat9k`).
    pub platform: String,
    /// Total size in bytes, header and trailer included.
    pub size: u64,
}

impl ImageSpec {
    /// An image of `size` bytes for the `cat9k` family.
    pub fn new(version: impl Into<String>, size: u64) -> Self {
        Self {
            version: version.into(),
            platform: "cat9k".into(),
            size,
        }
    }

    /// Same image for another platform family.
    pub fn with_platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = platform.into();
        self
    }

    /// The marketing-style version (`17.18.02`): the first three dotted parts.
    pub fn short_version(&self) -> String {
        self.version
            .split('.')
            .take(3)
            .collect::<Vec<_>>()
            .join(".")
    }

    fn header(&self) -> Result<[u8; HEADER_LEN], ImageError> {
        if self.size < MIN_IMAGE_LEN {
            return Err(ImageError::TooSmall(self.size));
        }
        header_value("version", &self.version)?;
        header_value("platform", &self.platform)?;
        let text = format!(
            "CW_BEGIN=$$\nCW_IMAGE={family}_iosxe.{v}.SPA.bin\nCW_FAMILY={family}\n\
             CW_FULL_VERSION={v}\nCW_VERSION={short}\nCW_SIZE={size}\nCW_END=$$\n",
            family = self.platform,
            v = self.version,
            short = self.short_version(),
            size = self.size,
        );
        if text.len() > HEADER_LEN {
            return Err(ImageError::Parse("header longer than 1 KiB".into()));
        }
        let mut h = [0u8; HEADER_LEN];
        h[..text.len()].copy_from_slice(text.as_bytes());
        Ok(h)
    }

    /// The image as an iterator of chunks of at most 64 KiB (the last one
    /// carries the trailer). Memory use is two blocks, whatever the size.
    pub fn chunks(&self) -> Result<ImageChunks, ImageError> {
        let header = self.header()?;
        Ok(ImageChunks {
            base: body_block(&self.version),
            header: Some(header),
            pos: 0,
            body_end: self.size - TRAILER_LEN as u64,
            size: self.size,
            hasher: Sha256::new(),
            done: false,
        })
    }

    /// Streams the image into `w`; returns its sha256 (hex).
    pub fn write_to<W: Write>(&self, mut w: W) -> Result<String, ImageError> {
        let mut full = Sha256::new();
        for chunk in self.chunks()? {
            full.update(&chunk);
            w.write_all(&chunk)
                .map_err(|e| ImageError::Io(e.to_string()))?;
        }
        w.flush().map_err(|e| ImageError::Io(e.to_string()))?;
        Ok(hex::encode(full.finalize()))
    }
}

/// Checks that `value` can be a header field and read back unchanged: not
/// empty, and no character the header syntax gives a meaning to (`\n` ends
/// a field, `\r` is dropped before one, `\0` ends the header, `=` separates
/// key and value).
fn header_value(field: &str, value: &str) -> Result<(), ImageError> {
    if value.is_empty() {
        return Err(ImageError::Parse(format!("image {field} is empty")));
    }
    if value.contains(['\n', '\r', '\0', '=']) {
        return Err(ImageError::Parse(format!(
            "image {field} {value:?} contains a newline, carriage return, NUL or '='"
        )));
    }
    Ok(())
}

/// The base body block: a deterministic function of the version, so two
/// images of one version are byte-identical and different versions differ.
fn body_block(version: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_LEN);
    let mut seed: [u8; 32] = Sha256::digest(version.as_bytes()).into();
    while out.len() < BLOCK_LEN {
        seed = Sha256::digest(seed).into();
        out.extend_from_slice(&seed);
    }
    out.truncate(BLOCK_LEN);
    out
}

/// Iterator over an image's bytes; see [`ImageSpec::chunks`].
pub struct ImageChunks {
    base: Vec<u8>,
    header: Option<[u8; HEADER_LEN]>,
    pos: u64,
    body_end: u64,
    size: u64,
    hasher: Sha256,
    done: bool,
}

impl Iterator for ImageChunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        if let Some(h) = self.header.take() {
            self.hasher.update(h);
            self.pos = HEADER_LEN as u64;
            return Some(h.to_vec());
        }
        if self.pos < self.body_end {
            let block_index = (self.pos - HEADER_LEN as u64) / BLOCK_LEN as u64;
            let n = (self.body_end - self.pos).min(BLOCK_LEN as u64) as usize;
            let mut chunk = self.base[..n].to_vec();
            // The block index makes every block distinct (no dedup by accident).
            let idx = block_index.to_le_bytes();
            let k = idx.len().min(n);
            chunk[..k].copy_from_slice(&idx[..k]);
            self.hasher.update(&chunk);
            self.pos += n as u64;
            return Some(chunk);
        }
        self.done = true;
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let mut t = vec![0u8; TRAILER_LEN];
        let line = format!("\n{TRAILER_KEY}{digest}\n");
        t[..line.len()].copy_from_slice(line.as_bytes());
        self.pos = self.size;
        Some(t)
    }
}

/// Why an image was refused; maps onto `InstallError` types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image: no header or no version in it (PARSE_FAIL).
    #[error("cannot parse image: {0}")]
    Parse(String),
    /// The trailer digest does not match the content (INTEGRITY_FAIL).
    #[error("image integrity check failed: {0}")]
    Integrity(String),
    /// Built for another platform family (INCOMPATIBLE).
    #[error("image is for platform {found}, this device runs {expected}")]
    Incompatible {
        /// Family in the image.
        found: String,
        /// Family of the device.
        expected: String,
    },
    /// Smaller than a header plus a trailer.
    #[error("image size {0} is below the minimum of {MIN_IMAGE_LEN} bytes")]
    TooSmall(u64),
    /// Writing failed.
    #[error("i/o: {0}")]
    Io(String),
}

/// Parses an image header (the first KiB, or as much as there is).
pub fn parse_header(bytes: &[u8]) -> Result<ImageSpec, ImageError> {
    let head = &bytes[..bytes.len().min(HEADER_LEN)];
    let text: String = head
        .split(|b| *b == 0)
        .next()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    if !text.starts_with("CW_BEGIN=$$") {
        return Err(ImageError::Parse(
            "no CW_BEGIN header in the first KiB".into(),
        ));
    }
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_owned)
    };
    let version = field("CW_FULL_VERSION")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ImageError::Parse("no CW_FULL_VERSION in the header".into()))?;
    let platform = field("CW_FAMILY").ok_or_else(|| ImageError::Parse("no CW_FAMILY".into()))?;
    let size = field("CW_SIZE")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ImageError::Parse("no CW_SIZE".into()))?;
    Ok(ImageSpec {
        version,
        platform,
        size,
    })
}

/// Checks an image while it streams in: feed it chunks of any size, then
/// call [`ImageValidator::finish`]. Holds at most one KiB plus the trailer.
pub struct ImageValidator {
    head: Vec<u8>,
    tail: Vec<u8>,
    hasher: Sha256,
    total: u64,
}

impl Default for ImageValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageValidator {
    /// A validator that has seen nothing yet.
    pub fn new() -> Self {
        Self {
            head: Vec::with_capacity(HEADER_LEN),
            tail: Vec::new(),
            hasher: Sha256::new(),
            total: 0,
        }
    }

    /// Bytes fed so far.
    pub fn received(&self) -> u64 {
        self.total
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < HEADER_LEN {
            let n = (HEADER_LEN - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        // Everything except the last TRAILER_LEN bytes seen goes to the hash.
        if data.len() >= TRAILER_LEN {
            self.hasher.update(&self.tail);
            let split = data.len() - TRAILER_LEN;
            self.hasher.update(&data[..split]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[split..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TRAILER_LEN {
                let extra = self.tail.len() - TRAILER_LEN;
                self.hasher.update(&self.tail[..extra]);
                self.tail.drain(..extra);
            }
        }
    }

    /// Checks header, size, trailer digest and platform family.
    pub fn finish(self, expected_platform: &str) -> Result<ImageSpec, ImageError> {
        let spec = parse_header(&self.head)?;
        if self.total < MIN_IMAGE_LEN {
            return Err(ImageError::Parse(format!("only {} bytes", self.total)));
        }
        if spec.size != self.total {
            return Err(ImageError::Integrity(format!(
                "header says {} bytes, received {}",
                spec.size, self.total
            )));
        }
        let trailer = String::from_utf8_lossy(&self.tail);
        let want = trailer
            .lines()
            .find_map(|l| l.strip_prefix(TRAILER_KEY))
            .map(|s| s.trim_end_matches('\0').to_owned())
            .ok_or_else(|| ImageError::Integrity("no digest trailer".into()))?;
        let got = hex::encode(self.hasher.finalize());
        if got != want {
            return Err(ImageError::Integrity(format!(
                "digest {got} does not match trailer {want}"
            )));
        }
        if spec.platform != expected_platform {
            return Err(ImageError::Incompatible {
                found: spec.platform,
                expected: expected_platform.into(),
            });
        }
        Ok(spec)
    }
}

/// Parses sizes such as `256MiB`, `1G`, `4096`, `10k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(spec: &ImageSpec) -> Vec<u8> {
        spec.chunks().unwrap().flatten().collect()
    }

    #[test]
    fn round_trip_any_split() {
        let spec = ImageSpec::new("17.18.02.0.4112.1766116039", 200_000);
        let img = bytes(&spec);
        assert_eq!(img.len(), 200_000);
        assert!(
            String::from_utf8_lossy(&img[..1024])
                .contains("CW_FULL_VERSION=17.18.02.0.4112.1766116039")
        );
        for split in [1usize, 7, 127, 128, 129, 1000, 65536, 199_999] {
            let mut v = ImageValidator::new();
            for c in img.chunks(split) {
                v.update(c);
            }
            assert_eq!(v.finish("cat9k").unwrap(), spec, "split {split}");
        }
    }

    #[test]
    fn detects_corruption_foreign_and_garbage() {
        let spec = ImageSpec::new("26.01.01.0.340", 5000);
        let mut img = bytes(&spec);
        img[3000] ^= 1;
        let mut v = ImageValidator::new();
        v.update(&img);
        assert!(matches!(v.finish("cat9k"), Err(ImageError::Integrity(_))));

        let foreign = bytes(&ImageSpec::new("26.01.01.0.340", 5000).with_platform("cat8k"));
        let mut v = ImageValidator::new();
        v.update(&foreign);
        assert!(matches!(
            v.finish("cat9k"),
            Err(ImageError::Incompatible { .. })
        ));

        let mut v = ImageValidator::new();
        v.update(&[0x7f; 4096]);
        assert!(matches!(v.finish("cat9k"), Err(ImageError::Parse(_))));
    }

    #[test]
    fn deterministic_and_version_dependent() {
        let a = ImageSpec::new("17.15.01a", 70_000)
            .write_to(Vec::new())
            .unwrap();
        let b = ImageSpec::new("17.15.01a", 70_000)
            .write_to(Vec::new())
            .unwrap();
        let c = ImageSpec::new("17.15.01b", 70_000)
            .write_to(Vec::new())
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn header_fields_that_would_not_read_back_are_refused() {
        for (spec, field) in [
            (ImageSpec::new("17.18.01\r", 5000), "version"),
            (ImageSpec::new("", 5000), "version"),
            (
                ImageSpec::new("17.18.01", 5000).with_platform(""),
                "platform",
            ),
            (
                ImageSpec::new("17.18.01", 5000).with_platform("cat9k\nCW_SIZE=1"),
                "platform",
            ),
            (
                ImageSpec::new("17.18.01", 5000).with_platform("cat9k\0"),
                "platform",
            ),
        ] {
            let e = spec.chunks().err().expect("refused").to_string();
            assert!(e.contains(&format!("image {field}")), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12q").is_err());
        assert!(ImageSpec::new("1", 10).chunks().is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Header values as the format allows them, with the odd characters
        /// (`$`, space, unicode) a careless parser trips on.
        fn value() -> impl Strategy<Value = String> {
            "[0-9a-zA-Z._$ \u{e9}\u{4e2d}-]{1,40}"
        }

        fn spec() -> impl Strategy<Value = ImageSpec> {
            (value(), value(), MIN_IMAGE_LEN..(1u64 << 40))
                .prop_map(|(v, p, size)| ImageSpec::new(v, size).with_platform(p))
        }

        /// What `parse_header` promises for any bytes: a refusal is a
        /// Parse error naming the header field it lacks; an acceptance
        /// returns the fields as the first KiB spells them.
        fn check_parse(bytes: &[u8]) -> Result<(), TestCaseError> {
            match parse_header(bytes) {
                Err(ImageError::Parse(m)) => {
                    let named = ["CW_BEGIN", "CW_FULL_VERSION", "CW_FAMILY", "CW_SIZE"]
                        .iter()
                        .any(|f| m.contains(f));
                    prop_assert!(named, "{m:?} names no header field");
                }
                Err(e) => prop_assert!(false, "not a parse error: {e:?}"),
                Ok(spec) => {
                    let head = &bytes[..bytes.len().min(HEADER_LEN)];
                    let end = head.iter().position(|b| *b == 0).unwrap_or(head.len());
                    let text = String::from_utf8_lossy(&head[..end]);
                    prop_assert!(text.starts_with("CW_BEGIN=$$"));
                    for (k, v) in [
                        ("CW_FULL_VERSION", spec.version.clone()),
                        ("CW_FAMILY", spec.platform.clone()),
                        ("CW_SIZE", spec.size.to_string()),
                    ] {
                        prop_assert!(
                            text.lines().any(|l| {
                                l.strip_prefix(k)
                                    .and_then(|r| r.strip_prefix('='))
                                    .is_some_and(|r| {
                                        r == v || r.parse::<u64>().ok() == v.parse().ok()
                                    })
                            }),
                            "{k}={v:?} not in {text:?}"
                        );
                    }
                }
            }
            Ok(())
        }

        fn header_of(spec: &ImageSpec) -> Vec<u8> {
            spec.chunks().unwrap().next().unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_bytes_parse_or_give_a_parse_error(
                begin in any::<bool>(),
                bytes in prop::collection::vec(any::<u8>(), 0..2048),
            ) {
                // Half the cases start like a header, so the field parsing
                // is reached, not only the CW_BEGIN check.
                let mut input = if begin { b"CW_BEGIN=$$\n".to_vec() } else { Vec::new() };
                input.extend_from_slice(&bytes);
                check_parse(&input)?;
            }

            #[test]
            fn a_written_header_reads_back(spec in spec(), extra in prop::collection::vec(any::<u8>(), 0..64)) {
                let mut bytes = header_of(&spec);
                prop_assert_eq!(bytes.len(), HEADER_LEN);
                // Whatever follows the first KiB is not header.
                bytes.extend_from_slice(&extra);
                prop_assert_eq!(parse_header(&bytes).unwrap(), spec);
            }

            #[test]
            fn any_header_field_value_reads_back_or_is_refused(
                v in any::<String>(),
                p in any::<String>(),
            ) {
                let spec = ImageSpec::new(v, MIN_IMAGE_LEN).with_platform(p);
                match spec.chunks() {
                    Ok(mut c) => prop_assert_eq!(parse_header(&c.next().unwrap()).unwrap(), spec),
                    Err(e) => prop_assert!(matches!(e, ImageError::Parse(_)), "{e:?}"),
                }
            }

            #[test]
            fn a_damaged_header_never_panics(
                spec in spec(),
                edits in prop::collection::vec((0..HEADER_LEN, any::<u8>()), 1..8),
                cut in 0..=HEADER_LEN,
            ) {
                let mut bytes = header_of(&spec);
                for (at, b) in edits {
                    bytes[at] = b;
                }
                bytes.truncate(cut);
                check_parse(&bytes)?;
            }

            #[test]
            fn any_chunks_fed_to_the_validator_never_panic(
                chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
            ) {
                let mut v = ImageValidator::new();
                for c in &chunks {
                    v.update(c);
                }
                prop_assert_eq!(v.received(), chunks.iter().map(|c| c.len() as u64).sum::<u64>());
                // Random bytes are no image: refused as unparseable or
                // corrupt, with a reason.
                match v.finish("cat9k") {
                    Err(e @ (ImageError::Parse(_) | ImageError::Integrity(_))) => {
                        prop_assert!(e.to_string().len() > "cannot parse image: ".len(), "{e}");
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }

        proptest! {
            // Each case streams a whole image: fewer of them.
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn one_flipped_byte_before_the_trailer_padding_is_always_caught(
                size in MIN_IMAGE_LEN..150_000,
                at in any::<prop::sample::Index>(),
                flip in 1u8..=255,
                split in 1usize..70_000,
            ) {
                let spec = ImageSpec::new("17.18.02.0.4112.1766116039", size);
                let mut img: Vec<u8> = spec.chunks().unwrap().flatten().collect();
                // The trailer is "\nCW_IMAGE_SHA256=<64 hex>\n" and NUL
                // padding; what follows the digest only terminates it, so
                // (like the padding) no check covers it.
                let covered = img.len() - TRAILER_LEN + 1 + TRAILER_KEY.len() + 64;
                let i = at.index(covered);
                img[i] ^= flip;
                let mut v = ImageValidator::new();
                for c in img.chunks(split) {
                    v.update(c);
                }
                prop_assert!(v.finish("cat9k").is_err(), "flip of byte {i} accepted");
            }
        }
    }
}
