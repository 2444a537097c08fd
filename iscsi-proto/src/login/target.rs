//! The target's side of login: identify the initiator and the target it
//! wants, authenticate it, negotiate, and hand over a session.

use super::chap::{ChapAlgorithm, Credentials};
use super::{ISCSI_VERSION, LoginError, LoginOutcome, is_security_key};
use crate::keys::answer;
use crate::negotiate::{Negotiator, Preferences, Role, SessionType};
use crate::pdu::{Cid, Header, Isid, LoginRequest, LoginResponse, LoginStatus, Pdu, Stage, Tsih};
use crate::session::StatSnCounter;
use crate::text::{self, Pair, TextAccumulator};
use crate::{CmdSn, Itt, StatSn};
use std::sync::Arc;

/// Who may log in to a target, and how the target proves itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetAuth {
    /// When set, the initiator must pass CHAP with these credentials.
    pub chap: Option<Credentials>,
    /// The target's own credentials, for initiators that ask for mutual CHAP.
    pub mutual: Option<Credentials>,
}

/// One target the portal offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    pub name: String,
    pub alias: Option<String>,
    pub auth: TargetAuth,
}

/// What the portal serves; shared by every login on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub targets: Vec<TargetEntry>,
    pub portal_group_tag: u16,
    /// Authentication for discovery sessions.
    pub discovery_auth: TargetAuth,
    /// Whether SendTargets discovery sessions are allowed at all.
    pub allow_discovery: bool,
    pub prefs: Preferences,
    /// The CHAP algorithms accepted.
    pub chap_algorithms: Vec<ChapAlgorithm>,
}

impl TargetConfig {
    /// A portal serving `targets` with our default preferences.
    #[must_use]
    pub fn new(targets: Vec<TargetEntry>) -> Self {
        Self {
            targets,
            portal_group_tag: 1,
            discovery_auth: TargetAuth::default(),
            allow_discovery: true,
            prefs: Preferences::default(),
            chap_algorithms: vec![ChapAlgorithm::Md5, ChapAlgorithm::Sha256],
        }
    }
}

/// Per-connection inputs chosen by the driver.
#[derive(Debug, Clone)]
pub struct TargetLoginParams {
    /// TSIH for the session if this login creates one.
    pub tsih: Tsih,
    /// The first StatSN of the connection.
    pub stat_sn: StatSn,
    /// How many commands the session will queue (MaxCmdSN - ExpCmdSN + 1).
    pub window: u32,
    /// Fresh random bytes: the CHAP identifier and challenge come from here.
    pub nonce: [u8; 64],
}

/// What to do after a Login Request.
#[derive(Debug)]
pub enum TargetStep {
    /// Send this response and wait for the next request.
    Continue(Pdu),
    /// Send this final response; the connection is in full feature phase.
    Complete(Pdu, Box<LoginOutcome>),
    /// Send this response, then close the connection.
    Fail(Pdu, LoginError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// AuthMethod not chosen yet.
    Pending,
    /// CHAP chosen; waiting for CHAP_A.
    ChapAlgorithm,
    /// Challenge sent; waiting for CHAP_N and CHAP_R.
    ChapResponse {
        algorithm: ChapAlgorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
}

#[derive(Debug, Clone, Copy)]
struct First {
    isid: Isid,
    cid: Cid,
    cmd_sn: CmdSn,
}

/// The target end of one connection's login.
#[derive(Debug)]
pub struct TargetLogin {
    config: Arc<TargetConfig>,
    params: TargetLoginParams,
    stage: Stage,
    first: Option<First>,
    text: TextAccumulator,
    negotiator: Negotiator,
    identified: bool,
    target: Option<usize>,
    initiator_name: String,
    auth: Auth,
    chap_name: Option<String>,
    stat_sn: StatSnCounter,
}

impl TargetLogin {
    #[must_use]
    pub fn new(config: Arc<TargetConfig>, params: TargetLoginParams) -> Self {
        let negotiator = Negotiator::new(Role::Target, true, &config.prefs);
        let stat_sn = StatSnCounter::new(params.stat_sn);
        Self {
            config,
            params,
            stage: Stage::SECURITY_NEGOTIATION,
            first: None,
            text: TextAccumulator::default(),
            negotiator,
            identified: false,
            target: None,
            initiator_name: String::new(),
            auth: Auth::Pending,
            chap_name: None,
            stat_sn,
        }
    }

    /// Handle one PDU received during login. Never fails: errors become a
    /// failure response to send before closing.
    pub fn step(&mut self, pdu: &Pdu) -> TargetStep {
        let Header::LoginRequest(req) = &pdu.header else {
            // RFC 7143 11.13.5: 0x020b "Invalid request type during login".
            let err = LoginError::Protocol("only Login Requests are allowed during login");
            return TargetStep::Fail(self.failure(None, LoginStatus::INVALID_DURING_LOGIN), err);
        };
        match self.handle(req, &pdu.data) {
            Ok(step) => step,
            Err(err) => TargetStep::Fail(self.failure(Some(req), err.status()), err),
        }
    }

    fn handle(&mut self, req: &LoginRequest, data: &[u8]) -> Result<TargetStep, LoginError> {
        let first = self.check_header(req)?;
        let Some(text) = self.text.push(data, req.cont)? else {
            // RFC 7143 6.3: each partial PDU is acknowledged by an empty response.
            return Ok(TargetStep::Continue(self.response(
                req,
                first,
                false,
                self.stage,
                Vec::new(),
            )));
        };
        let pairs = text::parse(&text)?;
        let (security, operational): (Vec<Pair>, Vec<Pair>) = pairs.into_iter().partition(|p| is_security_key(&p.key));

        let mut replies = Vec::new();
        if !self.identified {
            self.identify(&operational, &mut replies)?;
        }
        if self.stage == Stage::SECURITY_NEGOTIATION {
            self.authenticate(&security, req.transit, &mut replies)?;
        } else {
            replies.extend(security.iter().map(|p| Pair::new(p.key.clone(), answer::IRRELEVANT)));
        }
        replies.extend(self.negotiator.receive(&operational, self.stage)?);
        if self.stage == Stage::OPERATIONAL_NEGOTIATION {
            replies.extend(self.negotiator.offers(self.stage));
        }

        let security_done = self.auth == Auth::Done;
        let transit = req.transit && security_done && !self.negotiator.awaiting_answers();
        if !transit {
            return Ok(TargetStep::Continue(
                self.response(req, first, false, self.stage, replies),
            ));
        }
        let next = req.nsg;
        if next != Stage::FULL_FEATURE_PHASE {
            let rsp = self.response(req, first, true, next, replies);
            self.stage = next;
            return Ok(TargetStep::Continue(rsp));
        }
        let (session, connection) = self.negotiator.finish();
        let rsp = self.response(req, first, true, next, replies);
        let outcome = LoginOutcome {
            session_type: session.session_type,
            initiator_name: self.initiator_name.clone(),
            initiator_alias: self.negotiator.peer_value("InitiatorAlias").map(str::to_owned),
            target_name: self.target.map(|i| self.config.targets[i].name.clone()),
            isid: first.isid,
            tsih: self.params.tsih,
            cid: first.cid,
            session,
            connection,
            cmd_sn: first.cmd_sn,
            stat_sn: self.stat_sn.peek(),
            max_cmd_sn: self.max_cmd_sn(first),
            chap_name: self.chap_name.clone(),
        };
        self.stage = next;
        Ok(TargetStep::Complete(rsp, Box::new(outcome)))
    }

    /// Version, identity and stage checks on the header.
    fn check_header(&mut self, req: &LoginRequest) -> Result<First, LoginError> {
        let first = match self.first {
            None => {
                // RFC 7143 11.12.4: a target that supports none of
                // Version-min..=Version-max answers "Unsupported version".
                if req.version_min > ISCSI_VERSION {
                    return Err(LoginError::UnsupportedVersion {
                        min: req.version_min,
                        max: req.version_max,
                    });
                }
                if req.tsih != Tsih(0) {
                    // Adding connections to a session needs MaxConnections > 1,
                    // which this target never negotiates.
                    return Err(LoginError::SessionDoesNotExist(req.tsih));
                }
                if !matches!(req.csg, Stage::SECURITY_NEGOTIATION | Stage::OPERATIONAL_NEGOTIATION) {
                    return Err(LoginError::Protocol("login must start in a negotiation stage"));
                }
                self.stage = req.csg;
                let first = First {
                    isid: req.isid,
                    cid: req.cid,
                    cmd_sn: req.cmd_sn,
                };
                self.first = Some(first);
                first
            }
            Some(first) => {
                if req.isid != first.isid || req.tsih != Tsih(0) || req.cid != first.cid {
                    return Err(LoginError::Protocol("ISID, TSIH or CID changed during login"));
                }
                first
            }
        };
        if req.csg != self.stage {
            return Err(LoginError::Protocol("CSG is not the current stage"));
        }
        // RFC 7143 11.12.2 forbids a request that both transits and continues.
        if req.transit && req.cont {
            return Err(LoginError::Protocol("T and C bits both set"));
        }
        if req.transit && !(req.nsg.is_valid() && req.nsg > req.csg) {
            return Err(LoginError::Protocol("NSG does not follow CSG"));
        }
        Ok(first)
    }

    /// Learn who logs in to what from the first complete text.
    fn identify(&mut self, pairs: &[Pair], replies: &mut Vec<Pair>) -> Result<(), LoginError> {
        let value = |key: &str| pairs.iter().find(|p| p.key == key).map(|p| p.value.as_str());
        let session_type = match value("SessionType") {
            None => SessionType::Normal,
            Some(v) => SessionType::parse(v).ok_or_else(|| LoginError::SessionTypeNotSupported(v.into()))?,
        };
        // RFC 7143 13.5: the initiator sends InitiatorName in the first
        // Login Request of every connection.
        let initiator = value("InitiatorName").filter(|n| !n.is_empty());
        self.initiator_name = initiator.ok_or(LoginError::MissingParameter("InitiatorName"))?.into();
        match session_type {
            SessionType::Discovery if !self.config.allow_discovery => {
                return Err(LoginError::SessionTypeNotSupported("Discovery".into()));
            }
            SessionType::Discovery => {}
            SessionType::Normal => {
                let name = value("TargetName").ok_or(LoginError::MissingParameter("TargetName"))?;
                let index = self.config.targets.iter().position(|t| t.name == name);
                let index = index.ok_or_else(|| LoginError::TargetNotFound(name.into()))?;
                self.target = Some(index);
                // RFC 7143 13.9: the target returns TargetPortalGroupTag in the
                // first Login Response of a normal session's leading login.
                replies.push(Pair::new(
                    "TargetPortalGroupTag",
                    self.config.portal_group_tag.to_string(),
                ));
                if let Some(alias) = &self.config.targets[index].alias {
                    replies.push(Pair::new("TargetAlias", alias.clone()));
                }
            }
        }
        if self.stage == Stage::OPERATIONAL_NEGOTIATION {
            if self.auth_config().chap.is_some() {
                return Err(LoginError::Authentication(
                    "the target requires CHAP; login skipped security negotiation",
                ));
            }
            self.auth = Auth::Done;
        }
        self.negotiator.set_session_type(session_type);
        self.identified = true;
        Ok(())
    }

    fn auth_config(&self) -> &TargetAuth {
        match self.target {
            Some(i) => &self.config.targets[i].auth,
            None => &self.config.discovery_auth,
        }
    }

    /// One security-stage exchange (RFC 7143 12.1.3 for CHAP).
    fn authenticate(&mut self, pairs: &[Pair], transit: bool, replies: &mut Vec<Pair>) -> Result<(), LoginError> {
        let value = |key: &str| pairs.iter().find(|p| p.key == key).map(|p| p.value.as_str());
        let required = self.auth_config().chap.is_some();
        if self.auth == Auth::Pending {
            match value("AuthMethod") {
                Some(methods) => {
                    let offered: Vec<&str> = methods.split(',').collect();
                    if required && offered.contains(&"CHAP") {
                        replies.push(Pair::new("AuthMethod", "CHAP"));
                        self.auth = Auth::ChapAlgorithm;
                    } else if !required && offered.contains(&answer::NONE) {
                        replies.push(Pair::new("AuthMethod", answer::NONE));
                        self.auth = Auth::Done;
                    } else {
                        return Err(LoginError::Authentication("no acceptable AuthMethod offered"));
                    }
                }
                None if required && transit => {
                    return Err(LoginError::Authentication("the target requires CHAP; none was offered"));
                }
                None if !required => self.auth = Auth::Done,
                None => {}
            }
        }
        if self.auth == Auth::ChapAlgorithm
            && let Some(algorithms) = value("CHAP_A")
        {
            let algorithm = algorithms
                .split(',')
                .filter_map(ChapAlgorithm::from_code)
                .find(|a| self.config.chap_algorithms.contains(a))
                .ok_or(LoginError::Authentication("no common CHAP algorithm"))?;
            // Neither the initiator's answer nor ours may rest on a short secret.
            let auth = self.auth_config();
            for creds in auth.chap.iter().chain(&auth.mutual) {
                creds.check()?;
            }
            let id = self.params.nonce[0];
            let challenge = self.params.nonce[16..16 + algorithm.digest_len()].to_vec();
            replies.push(Pair::new("CHAP_A", algorithm.code().to_string()));
            replies.push(Pair::new("CHAP_I", id.to_string()));
            replies.push(Pair::new("CHAP_C", text::encode_binary(&challenge)));
            self.auth = Auth::ChapResponse {
                algorithm,
                id,
                challenge,
            };
            return Ok(());
        }
        if let Auth::ChapResponse {
            algorithm,
            id,
            challenge,
        } = &self.auth
        {
            let (Some(name), Some(response)) = (value("CHAP_N"), value("CHAP_R")) else {
                return Err(LoginError::Authentication("CHAP_N and CHAP_R expected"));
            };
            let response = text::decode_binary(response)?;
            let creds = self
                .auth_config()
                .chap
                .as_ref()
                .ok_or(LoginError::Authentication("CHAP not configured"))?;
            if name != creds.name || !algorithm.verify(*id, &creds.secret, challenge, &response) {
                return Err(LoginError::Authentication("CHAP name or response does not match"));
            }
            match (value("CHAP_I"), value("CHAP_C")) {
                (None, None) => {}
                (Some(peer_id), Some(peer_challenge)) => {
                    let peer_id = text::parse_number(peer_id)
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or(LoginError::Authentication("invalid CHAP_I"))?;
                    let peer_challenge = text::decode_binary(peer_challenge)?;
                    // RFC 7143 12.1.3: a challenge equal to the one we sent is
                    // a reflection attack and ends the login.
                    if peer_challenge == *challenge || peer_challenge.is_empty() || peer_challenge.len() > 1024 {
                        return Err(LoginError::Authentication("unacceptable mutual CHAP challenge"));
                    }
                    let mutual = self
                        .auth_config()
                        .mutual
                        .as_ref()
                        .ok_or(LoginError::Authentication("mutual CHAP asked for but not configured"))?;
                    let answer = algorithm.response(peer_id, &mutual.secret, &peer_challenge);
                    replies.push(Pair::new("CHAP_N", mutual.name.clone()));
                    replies.push(Pair::new("CHAP_R", text::encode_binary(&answer)));
                }
                _ => return Err(LoginError::Authentication("CHAP_I and CHAP_C must come together")),
            }
            self.chap_name = Some(name.to_owned());
            self.auth = Auth::Done;
        }
        Ok(())
    }

    fn max_cmd_sn(&self, first: First) -> CmdSn {
        first.cmd_sn.add(self.params.window.max(1) - 1)
    }

    fn response(&mut self, req: &LoginRequest, first: First, transit: bool, nsg: Stage, pairs: Vec<Pair>) -> Pdu {
        let final_ = transit && nsg == Stage::FULL_FEATURE_PHASE;
        let header = LoginResponse {
            transit,
            cont: false,
            csg: self.stage,
            nsg: if transit { nsg } else { Stage(0) },
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: first.isid,
            tsih: if final_ { self.params.tsih } else { Tsih(0) },
            itt: req.itt,
            stat_sn: self.stat_sn.take(),
            exp_cmd_sn: first.cmd_sn,
            max_cmd_sn: self.max_cmd_sn(first),
            status: LoginStatus::SUCCESS,
        };
        Pdu::with_data(header, text::encode(&pairs))
    }

    fn failure(&mut self, req: Option<&LoginRequest>, status: LoginStatus) -> Pdu {
        failure_response(req, status, self.stat_sn.take())
    }
}

/// A Login Response refusing `req` with `status`.
fn failure_response(req: Option<&LoginRequest>, status: LoginStatus, stat_sn: StatSn) -> Pdu {
    let header = LoginResponse {
        transit: false,
        cont: false,
        csg: req.map_or(Stage(0), |r| r.csg),
        nsg: Stage(0),
        version_max: ISCSI_VERSION,
        version_active: ISCSI_VERSION,
        isid: req.map_or(Isid::default(), |r| r.isid),
        tsih: Tsih(0),
        itt: req.map_or(Itt::RESERVED, |r| r.itt),
        stat_sn,
        exp_cmd_sn: req.map_or(CmdSn(0), |r| r.cmd_sn),
        max_cmd_sn: req.map_or(CmdSn(0), |r| r.cmd_sn),
        status,
    };
    Pdu::new(header)
}

/// The final Login Response of a login that negotiated to its end, turned
/// into a refusal for `err` when the target will not admit the session
/// (RFC 7143 11.13.3: a failed login answers with T=0 and TSIH 0, and
/// carries no text).
#[must_use]
pub fn refuse(mut rsp: Pdu, err: &LoginError) -> Pdu {
    if let Header::LoginResponse(h) = &mut rsp.header {
        h.status = err.status();
        h.transit = false;
        h.nsg = Stage(0);
        h.tsih = Tsih(0);
    }
    rsp.data = bytes::Bytes::new();
    rsp
}
