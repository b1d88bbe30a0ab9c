//! The value types and parsers of `flags.rs`: each checks one flag's value alone and names it.

use std::net::SocketAddr;

use crate::flushed::Suffix;
use crate::listen::{Framing, Transport};
use crate::protocol::origin::Precedence;

/// A `--cores` list, in the order given.
#[derive(Debug, Clone)]
pub struct CoreList(pub Vec<usize>);

#[derive(Debug, Clone)]
pub struct HistogramAggregates(pub Vec<Suffix>);

#[derive(Debug, Clone)]
pub struct Percentiles(pub Vec<(u8, f64)>);

pub(super) fn parse_cores(s: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in s.split(',') {
        let bad = || format!("{part:?} is not a CPU number or range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(format!("range {part:?} runs backwards"));
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut sorted = cores.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cores.len() {
        return Err("a CPU is listed twice".into());
    }
    Ok(CoreList(cores))
}

pub(super) fn parse_aggregates(s: &str) -> Result<HistogramAggregates, String> {
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            Suffix::from_aggregate(a)
                .ok_or_else(|| format!("{a:?} is not one of max, min, median, avg, count, sum"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(HistogramAggregates)
}

pub(super) fn parse_percentiles(s: &str) -> Result<Percentiles, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<f64>() {
            Ok(q) if q > 0.0 && q < 1.0 => Ok(((q * 100.0 + 0.5) as u8, q)),
            _ => Err(format!("{p:?} is not a number in (0, 1)")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Percentiles)
}

/// `--eol-required` transports, indexed by `Transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EolRequired(pub [bool; Transport::ALL.len()]);

impl EolRequired {
    pub fn on(&self, t: Transport) -> bool {
        self.0[t as usize]
    }
}

pub(super) fn parse_eol_required(s: &str) -> Result<EolRequired, String> {
    let mut eol = EolRequired::default();
    for t in s.split(',').filter(|t| !t.is_empty()) {
        let Some(transport) = Transport::ALL.into_iter().find(|x| x.name() == t) else {
            return Err(format!(
                "{t:?} is not a transport corestatsd listens on (udp, uds, uds_stream, tcp)"
            ));
        };
        eol.0[transport as usize] = true;
    }
    Ok(eol)
}

pub(super) fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode like 0722")),
    }
}

pub(super) fn parse_framing(s: &str) -> Result<Framing, String> {
    match s {
        "length" => Ok(Framing::Length),
        "newline" => Ok(Framing::Newline),
        _ => Err(format!("{s:?} is not a framing (length or newline)")),
    }
}

pub(super) fn parse_precedence(s: &str) -> Result<Precedence, String> {
    match s {
        "client" => Ok(Precedence::Client),
        "socket" => Ok(Precedence::Socket),
        _ => Err(format!("{s:?} is not client or socket")),
    }
}

pub(super) fn parse_forward_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_accept_lists_and_ranges() {
        assert_eq!(parse_cores("0-3").unwrap().0, vec![0, 1, 2, 3]);
        assert_eq!(parse_cores("0,2").unwrap().0, vec![0, 2]);
        assert_eq!(parse_cores("0-1,4").unwrap().0, vec![0, 1, 4]);
        assert!(parse_cores("3-1").is_err());
        assert!(parse_cores("0,0").is_err());
        assert!(parse_cores("a").is_err());
        assert!(parse_cores("").is_err());
    }

    #[test]
    fn percentiles_and_aggregates_are_validated() {
        assert_eq!(
            parse_percentiles("0.95,0.5").unwrap().0,
            vec![(95, 0.95), (50, 0.5)]
        );
        assert!(parse_percentiles("1.5").is_err());
        assert!(parse_percentiles("0").is_err());
        assert_eq!(
            parse_aggregates("max,sum").unwrap().0,
            vec![Suffix::Max, Suffix::Sum]
        );
        assert!(parse_aggregates("p99").is_err());
    }

    #[test]
    fn eol_required_names_known_transports_only() {
        let eol = parse_eol_required("udp,tcp").unwrap();
        assert!(eol.on(Transport::Udp) && eol.on(Transport::Tcp));
        assert!(!eol.on(Transport::Uds) && !eol.on(Transport::UdsStream));
        assert!(
            parse_eol_required("uds,uds_stream")
                .unwrap()
                .on(Transport::UdsStream)
        );
        assert_eq!(parse_eol_required("").unwrap(), EolRequired::default());
        assert!(parse_eol_required("udp,smoke").is_err());
    }

    #[test]
    fn modes_framings_and_precedence() {
        assert_eq!(parse_mode("0722").unwrap(), 0o722);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("77777").is_err());
        assert_eq!(parse_framing("newline").unwrap(), Framing::Newline);
        assert!(parse_framing("lines").is_err());
        assert_eq!(parse_precedence("socket").unwrap(), Precedence::Socket);
        assert!(parse_precedence("kernel").is_err());
    }
}
