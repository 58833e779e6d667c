//! DNS messages as secops' resolver reads and writes them (the wire format is hickory-proto's):
//! the one question an agent asks, the answers it gets, and the part of an upstream's answer
//! that belongs to the question (the CNAME chain from the name asked to its records).

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The largest UDP answer sent to a client that announces no EDNS payload size (RFC 1035).
const PLAIN_UDP_PAYLOAD: usize = 512;
/// The largest UDP answer sent whatever the client announces (the DNS flag day's size, which
/// avoids IP fragmentation).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// CNAMEs followed from the name asked before the chain is called broken.
const MAX_CHAIN: usize = 16;

/// One query an agent sent: exactly one question, opcode QUERY.
#[derive(Clone, Debug)]
pub(crate) struct Question {
    /// The client's message (its id, flags, question as written, EDNS).
    request: Message,
    /// The name asked, lowercased, without the trailing dot: what the policy judges and the
    /// upstream is asked (lowercase, so the case of its letters cannot carry data out).
    pub(crate) name: String,
    /// The name asked, lowercased, as a DNS name.
    pub(crate) dns_name: Name,
    pub(crate) qtype: RecordType,
}

/// A message that is not a query secops answers, and what to reply (nothing when not even a
/// header could be read).
#[derive(Debug)]
pub(crate) struct Unanswerable {
    pub(crate) reply: Option<Vec<u8>>,
    pub(crate) why: &'static str,
}

/// How the answer travels: UDP answers must fit the client's payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Question {
    /// Reads a client's query.
    pub(crate) fn read(bytes: &[u8]) -> Result<Question, Unanswerable> {
        let header_only = |code: ResponseCode, why: &'static str| Unanswerable {
            reply: header_reply(bytes, code),
            why,
        };
        let request = Message::from_vec(bytes)
            .map_err(|_| header_only(ResponseCode::FormErr, "not a DNS message"))?;
        if request.metadata.message_type != MessageType::Query {
            return Err(Unanswerable {
                reply: None,
                why: "a response, not a query",
            });
        }
        if request.metadata.op_code != OpCode::Query {
            return Err(header_only(
                ResponseCode::NotImp,
                "an opcode other than QUERY",
            ));
        }
        let [query] = request.queries.as_slice() else {
            return Err(header_only(
                ResponseCode::FormErr,
                "not exactly one question",
            ));
        };
        let dns_name = query.name().to_lowercase();
        let mut name = dns_name.to_ascii();
        if name.ends_with('.') {
            name.pop();
        }
        Ok(Question {
            qtype: query.query_type(),
            name,
            dns_name,
            request,
        })
    }

    /// The client's message id.
    pub(crate) fn id(&self) -> u16 {
        self.request.metadata.id
    }

    /// A reply with `rcode` and nothing in it (a refusal, a failure).
    pub(crate) fn reply(&self, rcode: ResponseCode) -> Vec<u8> {
        self.answer(rcode, &[], &[], Transport::Tcp)
    }

    /// The reply to this question. A UDP reply larger than the client may receive is sent
    /// truncated (TC set, no records), so the client asks again over TCP.
    pub(crate) fn answer(
        &self,
        rcode: ResponseCode,
        answers: &[Record],
        authorities: &[Record],
        transport: Transport,
    ) -> Vec<u8> {
        let mut reply = self.response(rcode);
        reply.answers = answers.to_vec();
        reply.authorities = authorities.to_vec();
        let bytes = encode(&reply);
        if transport == Transport::Udp && bytes.len() > self.udp_payload() {
            let mut truncated = self.response(rcode);
            truncated.metadata.truncation = true;
            return encode(&truncated);
        }
        bytes
    }

    fn response(&self, rcode: ResponseCode) -> Message {
        let mut metadata = Metadata::response_from_request(&self.request.metadata);
        metadata.recursion_available = true;
        metadata.response_code = rcode;
        let mut reply = Message::new(self.id(), MessageType::Response, OpCode::Query);
        reply.metadata = metadata;
        // The question as the client wrote it (case too: some clients check it).
        reply.queries = self.request.queries.clone();
        if self.request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            reply.edns = Some(edns);
        }
        reply
    }

    fn udp_payload(&self) -> usize {
        match &self.request.edns {
            Some(edns) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
            None => PLAIN_UDP_PAYLOAD,
        }
    }
}

fn encode(message: &Message) -> Vec<u8> {
    // A message built from parsed records always encodes; should it not, the client gets a
    // server failure rather than nothing.
    message.to_vec().unwrap_or_else(|_| {
        let mut failed = message.clone();
        failed.answers.clear();
        failed.authorities.clear();
        failed.additionals.clear();
        failed.metadata.response_code = ResponseCode::ServFail;
        failed.to_vec().unwrap_or_default()
    })
}

/// A reply made only of the request's header, with `rcode`: for messages that cannot be
/// read as one question.
fn header_reply(bytes: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    if bytes.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let mut reply = Message::new(id, MessageType::Response, OpCode::Query);
    reply.metadata.response_code = rcode;
    reply.metadata.recursion_desired = bytes[2] & 0x01 != 0;
    reply.to_vec().ok()
}

/// What an upstream's answer says about the question: the records on the chain from the name
/// asked (CNAMEs, then the records of the type asked), the addresses at its end with the
/// shortest TTL on the way to them, and, for an answer without records, how long it may be
/// kept (the zone's SOA).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chain {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    /// The SOA that says how long a negative answer holds, if the upstream gave one.
    pub(crate) authorities: Vec<Record>,
    pub(crate) addresses: Vec<IpAddr>,
    /// Seconds: the shortest TTL of the records the answer is made of.
    pub(crate) ttl: u32,
}

impl Chain {
    /// Takes from `response` only what answers `name`/`qtype`: records of other names (an
    /// upstream's "additional" addresses, or records off the chain) are dropped, so nothing
    /// the question did not lead to reaches the agent or its allowlist.
    pub(crate) fn of(response: &Message, name: &Name, qtype: RecordType) -> Chain {
        let rcode = response.metadata.response_code;
        let mut answers = Vec::new();
        let mut ttl = u32::MAX;
        let mut current = name.clone();
        let mut seen = HashSet::new();
        // CNAMEs first (an upstream may list them in any order).
        while answers.len() < MAX_CHAIN && seen.insert(current.to_lowercase()) {
            let next = response
                .answers
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME && r.name.eq_ignore_root(&current));
            let Some(record) = next else { break };
            ttl = ttl.min(record.ttl);
            answers.push(record.clone());
            match &record.data {
                RData::CNAME(target) if qtype != RecordType::CNAME => current = target.0.clone(),
                _ => break,
            }
        }
        let mut addresses = Vec::new();
        if qtype != RecordType::CNAME {
            for record in response
                .answers
                .iter()
                .filter(|r| r.record_type() == qtype && r.name.eq_ignore_root(&current))
            {
                ttl = ttl.min(record.ttl);
                match &record.data {
                    RData::A(a) => addresses.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => addresses.push(IpAddr::V6(a.0)),
                    _ => {}
                }
                answers.push(record.clone());
            }
        }
        let authorities: Vec<Record> = response
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA && r.name.zone_of(name))
            .cloned()
            .collect();
        if answers.is_empty() {
            ttl = authorities
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .min()
                .unwrap_or(0);
        }
        addresses.sort();
        addresses.dedup();
        Chain {
            rcode,
            answers,
            authorities,
            addresses,
            ttl: if ttl == u32::MAX { 0 } else { ttl },
        }
    }

    /// The same records with `elapsed` seconds taken off every TTL (a cached answer).
    pub(crate) fn aged(&self, elapsed: u32) -> (Vec<Record>, Vec<Record>) {
        let age = |records: &[Record]| {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(elapsed);
                    r
                })
                .collect()
        };
        (age(&self.answers), age(&self.authorities))
    }
}

/// The query secops sends upstream for a question: built anew from the name and type alone
/// (random id, recursion desired, EDNS with no options), so nothing else of what the agent
/// wrote (EDNS options, flags, the case of the name) travels on.
pub(crate) fn upstream_query(name: &Name, qtype: RecordType) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    query.edns = Some(edns);
    query
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::{A, CNAME, SOA, TXT};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn query_bytes(qname: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name(qname), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.edns = Some(e);
        }
        m.to_vec().expect("encode")
    }

    #[test]
    fn a_query_is_read_lowercased_and_answered_with_its_own_question() {
        let q = Question::read(&query_bytes("WwW.Example.COM.", RecordType::A, true)).unwrap();
        assert_eq!(q.name, "www.example.com");
        assert_eq!(q.qtype, RecordType::A);
        let reply = Message::from_vec(&q.reply(ResponseCode::Refused)).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(reply.metadata.recursion_desired && reply.metadata.recursion_available);
        assert_eq!(reply.queries[0].name().to_ascii(), "WwW.Example.COM.");
        assert!(reply.edns.is_some());
    }

    #[test]
    fn messages_that_are_not_one_question_get_header_replies_or_nothing() {
        assert!(Question::read(b"short").unwrap_err().reply.is_none());
        let mut two = Message::query();
        two.add_query(Query::query(name("a.test."), RecordType::A));
        two.add_query(Query::query(name("b.test."), RecordType::A));
        let err = Question::read(&two.to_vec().unwrap()).unwrap_err();
        let reply = Message::from_vec(&err.reply.expect("a reply")).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        response.add_query(Query::query(name("a.test."), RecordType::A));
        assert!(Question::read(&response.to_vec().unwrap())
            .unwrap_err()
            .reply
            .is_none());
    }

    fn record(owner: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn only_the_chain_from_the_name_asked_is_kept() {
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        response.answers = vec![
            record("cdn.test.", 60, RData::A(A(Ipv4Addr::new(10, 0, 0, 2)))),
            record("www.test.", 300, RData::CNAME(CNAME(name("cdn.test.")))),
            // Off the chain: an upstream trying to slip in another name's address.
            record("evil.test.", 300, RData::A(A(Ipv4Addr::new(10, 6, 6, 6)))),
            record("cdn.test.", 30, RData::A(A(Ipv4Addr::new(10, 0, 0, 1)))),
        ];
        let chain = Chain::of(&response, &name("WWW.test."), RecordType::A);
        assert_eq!(
            chain.addresses,
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!(chain.answers.len(), 3);
        assert_eq!(chain.ttl, 30, "the shortest TTL on the chain");
        let (aged, _) = chain.aged(10);
        assert_eq!(
            aged.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [290, 50, 20]
        );
    }

    #[test]
    fn a_cname_loop_ends_and_other_types_carry_no_addresses() {
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        response.answers = vec![
            record("a.test.", 60, RData::CNAME(CNAME(name("b.test.")))),
            record("b.test.", 60, RData::CNAME(CNAME(name("a.test.")))),
        ];
        let chain = Chain::of(&response, &name("a.test."), RecordType::A);
        assert_eq!(chain.answers.len(), 2);
        assert!(chain.addresses.is_empty());
        response.answers = vec![record(
            "t.test.",
            60,
            RData::TXT(TXT::new(vec!["v=1".into()])),
        )];
        let chain = Chain::of(&response, &name("t.test."), RecordType::TXT);
        assert_eq!((chain.answers.len(), chain.addresses.len()), (1, 0));
    }

    #[test]
    fn a_negative_answer_lasts_as_long_as_its_soa_says() {
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        response.metadata.response_code = ResponseCode::NXDomain;
        response.authorities = vec![record(
            "test.",
            3600,
            RData::SOA(SOA::new(
                name("ns.test."),
                name("admin.test."),
                1,
                60,
                60,
                600,
                45,
            )),
        )];
        let chain = Chain::of(&response, &name("gone.test."), RecordType::A);
        assert_eq!(chain.rcode, ResponseCode::NXDomain);
        assert_eq!(chain.ttl, 45);
        assert_eq!(chain.authorities.len(), 1);
    }

    #[test]
    fn a_udp_answer_too_large_for_the_client_is_truncated() {
        let q = Question::read(&query_bytes("big.test.", RecordType::A, false)).unwrap();
        let many: Vec<Record> = (0..60)
            .map(|i| record("big.test.", 60, RData::A(A(Ipv4Addr::new(10, 0, 0, i)))))
            .collect();
        let udp = Message::from_vec(&q.answer(ResponseCode::NoError, &many, &[], Transport::Udp))
            .unwrap();
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = Message::from_vec(&q.answer(ResponseCode::NoError, &many, &[], Transport::Tcp))
            .unwrap();
        assert_eq!(tcp.answers.len(), 60);
    }

    #[test]
    fn the_upstream_query_carries_only_name_and_type() {
        let q = upstream_query(&name("x.test."), RecordType::AAAA);
        assert!(q.metadata.recursion_desired);
        assert_eq!(q.queries.len(), 1);
        assert!(q
            .edns
            .as_ref()
            .is_some_and(|e| e.options().as_ref().is_empty()));
    }
}
