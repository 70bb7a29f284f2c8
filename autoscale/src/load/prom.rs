//! Reads single series out of Prometheus text exposition, as scraped from `/metrics`.

/// The value of the first sample named `name` whose labels contain every `key="value"` in
/// `labels` (an empty slice matches a series without labels too). NaN when absent.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| parse_line(l, name))
        .find(|(label_text, _)| {
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .unwrap_or(f64::NAN)
}

/// Splits `name{labels} value` (or `name value`) when the name is exactly `name`.
fn parse_line<'a>(line: &'a str, name: &str) -> Option<(&'a str, f64)> {
    let rest = line.strip_prefix(name)?;
    let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find('}')?;
        (&inner[..end], inner[end + 1..].trim())
    } else if rest.starts_with(' ') {
        ("", rest.trim())
    } else {
        return None; // a longer name sharing this prefix
    };
    let number = value.split_whitespace().next()?;
    Some((labels, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP wick_saturation x\n# TYPE wick_saturation gauge\n\
        wick_saturation 0.75\nwick_saturation_other 9\n\
        wick_latency_seconds{quantile=\"0.5\"} 0.01\nwick_latency_seconds{quantile=\"0.99\"} 0.04\n\
        wick_latency_seconds_count 12\n";

    #[test]
    fn finds_plain_and_labelled_series() {
        assert_eq!(value(TEXT, "wick_saturation", &[]), 0.75);
        assert_eq!(
            value(TEXT, "wick_latency_seconds", &[("quantile", "0.99")]),
            0.04
        );
        assert_eq!(value(TEXT, "wick_latency_seconds_count", &[]), 12.0);
        assert!(value(TEXT, "wick_queue_depth", &[]).is_nan());
    }
}
