//! SendTargets (RFC 7143 section 13.3 and appendix C): what a target lists,
//! how an initiator reads the list, and how a long text response is cut
//! into PDUs that the initiator pulls one by one.

use crate::text::{self, Pair};
use crate::{Itt, Ttt};
use bytes::Bytes;

/// One target and the portals it is reachable at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    pub name: String,
    /// `address[:port],portal-group-tag` strings as sent in TargetAddress.
    pub addresses: Vec<String>,
}

/// What a SendTargets request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTargetsRequest {
    /// `SendTargets=All`: every target (discovery sessions).
    All,
    /// `SendTargets=<name>`: that target only.
    Named(String),
    /// `SendTargets=` (empty): the session's own target (normal sessions).
    Session,
}

impl SendTargetsRequest {
    #[must_use]
    pub fn parse(value: &str) -> Self {
        match value {
            "All" => Self::All,
            "" => Self::Session,
            name => Self::Named(name.into()),
        }
    }
}

/// The pairs answering `request` from a target that serves `records`.
///
/// RFC 7143 13.3: "All" is only for discovery sessions; in a normal session
/// it is answered with the session's target alone, the same as an empty
/// value. An unknown name gets an empty answer.
#[must_use]
pub fn answer(records: &[TargetRecord], request: &SendTargetsRequest, session_target: Option<&str>) -> Vec<Pair> {
    let selected: Vec<&TargetRecord> = match (request, session_target) {
        (SendTargetsRequest::All, None) => records.iter().collect(),
        (SendTargetsRequest::Named(name), _) => records.iter().filter(|r| &r.name == name).collect(),
        (_, Some(own)) => records.iter().filter(|r| r.name == own).collect(),
        (SendTargetsRequest::Session, None) => Vec::new(),
    };
    selected
        .into_iter()
        .flat_map(|r| {
            std::iter::once(Pair::new("TargetName", r.name.clone()))
                .chain(r.addresses.iter().map(|a| Pair::new("TargetAddress", a.clone())))
        })
        .collect()
}

/// Read a SendTargets answer: each TargetName starts a record and the
/// TargetAddress keys after it belong to it. Other keys are ignored.
#[must_use]
pub fn parse_answer(pairs: &[Pair]) -> Vec<TargetRecord> {
    let mut records: Vec<TargetRecord> = Vec::new();
    for pair in pairs {
        match (pair.key.as_str(), records.last_mut()) {
            ("TargetName", _) => records.push(TargetRecord {
                name: pair.value.clone(),
                addresses: Vec::new(),
            }),
            ("TargetAddress", Some(record)) => record.addresses.push(pair.value.clone()),
            _ => {}
        }
    }
    records
}

/// A text response too long for one PDU, handed out piece by piece.
///
/// RFC 7143 11.11: every PDU but the last has C=1 and a Target Transfer Tag
/// that the initiator echoes in an empty Text Request to get the next one;
/// the last has F=1 and a reserved tag.
#[derive(Debug)]
pub struct TextResponseSequence {
    itt: Itt,
    ttt: Ttt,
    text: Bytes,
    sent: usize,
    max_segment: usize,
}

/// One Text Response's worth of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub data: Bytes,
    /// C bit: more follows.
    pub cont: bool,
    /// F bit: this is the last.
    pub final_: bool,
    pub ttt: Ttt,
}

impl TextResponseSequence {
    /// A sequence answering the request `itt`, in chunks of at most
    /// `max_segment` bytes (the initiator's MaxRecvDataSegmentLength), using
    /// `ttt` to name the continuation.
    #[must_use]
    pub fn new(itt: Itt, ttt: Ttt, pairs: &[Pair], max_segment: u32) -> Self {
        let max_segment = usize::try_from(max_segment).unwrap_or(usize::MAX).max(1);
        Self {
            itt,
            ttt,
            text: text::encode(pairs),
            sent: 0,
            max_segment,
        }
    }

    /// The request this answers.
    #[must_use]
    pub fn itt(&self) -> Itt {
        self.itt
    }

    /// The tag the initiator must echo to continue.
    #[must_use]
    pub fn ttt(&self) -> Ttt {
        self.ttt
    }

    /// The next chunk.
    pub fn next_chunk(&mut self) -> TextChunk {
        let end = (self.sent + self.max_segment).min(self.text.len());
        let data = self.text.slice(self.sent..end);
        self.sent = end;
        let more = self.sent < self.text.len();
        TextChunk {
            data,
            cont: more,
            final_: !more,
            ttt: if more { self.ttt } else { Ttt::RESERVED },
        }
    }

    /// Whether every chunk has been handed out.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.sent >= self.text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<TargetRecord> {
        vec![
            TargetRecord {
                name: "iqn.a".into(),
                addresses: vec!["127.0.0.1:3260,1".into(), "[::1]:3260,1".into()],
            },
            TargetRecord {
                name: "iqn.b".into(),
                addresses: vec![],
            },
        ]
    }

    #[test]
    fn answers_and_parses() {
        let all = answer(&records(), &SendTargetsRequest::parse("All"), None);
        assert_eq!(all.len(), 4);
        assert_eq!(parse_answer(&all), records());
        let one = answer(&records(), &SendTargetsRequest::parse("iqn.b"), None);
        assert_eq!(one, vec![Pair::new("TargetName", "iqn.b")]);
        let own = answer(&records(), &SendTargetsRequest::parse("All"), Some("iqn.b"));
        assert_eq!(own, one, "All in a normal session means the session's target");
        assert!(answer(&records(), &SendTargetsRequest::parse("iqn.zzz"), None).is_empty());
        assert!(parse_answer(&[Pair::new("TargetAddress", "orphan")]).is_empty());
    }

    #[test]
    fn long_answers_are_chunked() {
        let pairs = answer(&records(), &SendTargetsRequest::All, None);
        let whole = text::encode(&pairs);
        let mut seq = TextResponseSequence::new(Itt(1), Ttt(9), &pairs, 16);
        let mut got = Vec::new();
        loop {
            let chunk = seq.next_chunk();
            assert!(chunk.data.len() <= 16);
            assert_eq!(chunk.cont, !chunk.final_);
            assert_eq!(chunk.ttt.is_reserved(), chunk.final_);
            got.extend_from_slice(&chunk.data);
            if chunk.final_ {
                break;
            }
        }
        assert!(seq.is_done());
        assert_eq!(got, whole);
        let mut empty = TextResponseSequence::new(Itt(1), Ttt(2), &[], 16);
        assert!(empty.next_chunk().final_);
    }
}
