//! HTTP and metrics: a raw HTTP/1.1 GET (for `/metrics`) and summing a Prometheus metric
//! over the series whose labels match.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

/// A raw HTTP/1.1 GET; returns the body of a 200 answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let path = path.to_string();
    let call = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header end in {} bytes", raw.len()))?;
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200 ") {
            bail!("GET {path}: {status}");
        }
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        Ok(if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        })
    });
    call.await?
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).unwrap_or("");
    }
}

/// The sum of the samples of metric `name` whose labels include every `(key, value)` of
/// `labels`, in a Prometheus text exposition (0 when there is none).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric whose name starts with `name`
        };
        let ok = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|kv| kv.trim() == format!("{k}=\"{v}\""))
        });
        if ok {
            if let Some(v) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                sum += v;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_labels() {
        let text = "# HELP x\nanchorage_mutations_total{outcome=\"committed\"} 5\n\
                    anchorage_mutations_total{outcome=\"denied\"} 2\n\
                    anchorage_mutations_total_extra 9\n\
                    anchorage_refused_messages_total{protocol=\"mutate\",reason=\"malformed\"} 3\n";
        assert_eq!(metric_value(text, "anchorage_mutations_total", &[]), 7.0);
        assert_eq!(
            metric_value(text, "anchorage_mutations_total", &[("outcome", "denied")]),
            2.0
        );
        assert_eq!(
            metric_value(
                text,
                "anchorage_refused_messages_total",
                &[("protocol", "mutate"), ("reason", "malformed")]
            ),
            3.0
        );
        assert_eq!(
            metric_value(text, "anchorage_refused_messages_total", &[("reason", "x")]),
            0.0
        );
    }

    #[test]
    fn dechunk_works() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
