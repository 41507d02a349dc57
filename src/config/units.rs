//! Parsing of the human units used in configuration: durations (`"30s"`) and sizes (`"10MiB"`).

use std::time::Duration;

use super::raw::Quantity;

/// Parses `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"7d"`, or a bare number of seconds.
pub fn duration(value: &Quantity) -> Result<Duration, String> {
    let text = match value {
        Quantity::Number(secs) => return Ok(Duration::from_secs(*secs)),
        Quantity::Text(text) => text.trim(),
    };
    let (number, unit) = split_unit(text);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration (use e.g. \"500ms\", \"30s\", \"15m\", \"1h\")")
    })?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "d" => number.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "{text:?} has an unknown duration unit {unit:?} (ms, s, m, h, d)"
            ))
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Parses `"10MiB"`, `"64KiB"`, `"1GiB"`, `"10MB"`, `"512B"`, or a bare number of bytes.
pub fn size(value: &Quantity) -> Result<u64, String> {
    let text = match value {
        Quantity::Number(bytes) => return Ok(*bytes),
        Quantity::Text(text) => text.trim(),
    };
    let (number, unit) = split_unit(text);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. \"64KiB\", \"10MiB\")"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown size unit {unit:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn split_unit(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Quantity {
        Quantity::Text(s.to_owned())
    }

    #[test]
    fn durations() {
        let cases = [
            ("500ms", Some(Duration::from_millis(500))),
            ("30s", Some(Duration::from_secs(30))),
            ("30", Some(Duration::from_secs(30))),
            ("15m", Some(Duration::from_secs(900))),
            ("2h", Some(Duration::from_secs(7200))),
            ("7d", Some(Duration::from_secs(604_800))),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("1.5s", None),
            ("10 years", None),
            ("99999999999999999999d", None),
        ];
        for (input, want) in cases {
            assert_eq!(duration(&text(input)).ok(), want, "{input:?}");
        }
        assert_eq!(duration(&Quantity::Number(5)), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn sizes() {
        let cases = [
            ("10MiB", Some(10 << 20)),
            ("64KiB", Some(64 << 10)),
            ("1GiB", Some(1 << 30)),
            ("10MB", Some(10_000_000)),
            ("512", Some(512)),
            ("512B", Some(512)),
            ("10 MiB", Some(10 << 20)),
            ("ten", None),
            ("10XB", None),
            ("99999999999999999999GiB", None),
        ];
        for (input, want) in cases {
            assert_eq!(size(&text(input)).ok(), want, "{input:?}");
        }
    }
}
