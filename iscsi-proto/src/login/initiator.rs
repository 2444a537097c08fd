//! The initiator's side of login: offer identity and authentication,
//! answer CHAP, negotiate, and verify the target in mutual CHAP.

use super::chap::{ChapAlgorithm, Credentials};
use super::{ISCSI_VERSION, LoginError, LoginOutcome, is_security_key};
use crate::keys::answer;
use crate::negotiate::{Negotiator, Preferences, Role, SessionType};
use crate::pdu::{Cid, Header, Isid, LoginRequest, LoginResponse, Pdu, Stage, Tsih};
use crate::session::ExpStatSn;
use crate::text::{self, Pair, TextAccumulator};
use crate::{CmdSn, Itt, StatSn};

/// What an initiator logs in with.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// The target to log in to; `None` opens a discovery session.
    pub target_name: Option<String>,
    /// The session's ISID: reuse it to reinstate a session after a failure.
    pub isid: Isid,
    pub cid: Cid,
    /// The CmdSN of the login, which the first command reuses.
    pub cmd_sn: CmdSn,
    pub itt: Itt,
    /// Our CHAP credentials, if the target asks for CHAP.
    pub chap: Option<Credentials>,
    /// The target's credentials: when set, mutual CHAP is required.
    pub mutual: Option<Credentials>,
    /// CHAP algorithms offered, most preferred first. MD5 leads by default:
    /// tgtd 1.0 only looks at the first value of CHAP_A and knows only MD5.
    pub chap_algorithms: Vec<ChapAlgorithm>,
    pub prefs: Preferences,
}

impl InitiatorConfig {
    /// A normal session to `target` (or discovery with `None`) with our
    /// default preferences and no authentication.
    #[must_use]
    pub fn new(initiator_name: impl Into<String>, target_name: Option<String>, isid: Isid) -> Self {
        Self {
            initiator_name: initiator_name.into(),
            initiator_alias: None,
            target_name,
            isid,
            cid: Cid(0),
            cmd_sn: CmdSn(1),
            itt: Itt(0),
            chap: None,
            mutual: None,
            chap_algorithms: vec![ChapAlgorithm::Md5, ChapAlgorithm::Sha256],
            prefs: Preferences::default(),
        }
    }
}

/// What to do after a Login Response.
#[derive(Debug)]
pub enum InitiatorStep {
    /// Send this request and wait for the next response.
    Send(Pdu),
    /// Login is over; the connection is in full feature phase.
    Complete(Box<LoginOutcome>),
    /// Login failed; close the connection.
    Fail(LoginError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// AuthMethod offered, answer pending.
    Offered,
    /// CHAP_A offered.
    ChapAlgorithm,
    /// CHAP_R sent; with mutual CHAP, our identifier and challenge.
    ChapResponse {
        algorithm: ChapAlgorithm,
        mutual: Option<(u8, Vec<u8>)>,
    },
    Done,
}

/// The initiator end of one connection's login.
#[derive(Debug)]
pub struct InitiatorLogin {
    config: InitiatorConfig,
    nonce: [u8; 64],
    stage: Stage,
    auth: Auth,
    negotiator: Negotiator,
    text: TextAccumulator,
    exp_stat_sn: ExpStatSn,
}

impl InitiatorLogin {
    /// `nonce` must be fresh random bytes: our mutual CHAP challenge.
    #[must_use]
    pub fn new(config: InitiatorConfig, nonce: [u8; 64]) -> Self {
        let mut negotiator = Negotiator::new(Role::Initiator, true, &config.prefs);
        let discovery = config.target_name.is_none();
        negotiator.set_session_type(if discovery {
            SessionType::Discovery
        } else {
            SessionType::Normal
        });
        Self {
            config,
            nonce,
            stage: Stage::SECURITY_NEGOTIATION,
            auth: Auth::Offered,
            negotiator,
            text: TextAccumulator::default(),
            exp_stat_sn: ExpStatSn::new(StatSn(0)),
        }
    }

    fn session_type(&self) -> SessionType {
        if self.config.target_name.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        }
    }

    /// The first Login Request.
    pub fn start(&mut self) -> Pdu {
        let mut pairs = vec![Pair::new("InitiatorName", self.config.initiator_name.clone())];
        if let Some(alias) = &self.config.initiator_alias {
            pairs.push(Pair::new("InitiatorAlias", alias.clone()));
        }
        pairs.push(Pair::new("SessionType", self.session_type().as_str()));
        if let Some(target) = &self.config.target_name {
            pairs.push(Pair::new("TargetName", target.clone()));
        }
        let methods = match (&self.config.chap, &self.config.mutual) {
            (Some(_), Some(_)) => "CHAP",
            (Some(_), None) => "CHAP,None",
            (None, _) => "None",
        };
        pairs.push(Pair::new("AuthMethod", methods));
        self.request(true, Stage::OPERATIONAL_NEGOTIATION, &pairs)
    }

    /// Handle one PDU received during login.
    pub fn step(&mut self, pdu: &Pdu) -> InitiatorStep {
        match self.handle(pdu) {
            Ok(step) => step,
            Err(err) => InitiatorStep::Fail(err),
        }
    }

    fn handle(&mut self, pdu: &Pdu) -> Result<InitiatorStep, LoginError> {
        let Header::LoginResponse(rsp) = &pdu.header else {
            return Err(LoginError::Protocol("the target sent a non-login PDU during login"));
        };
        if !rsp.status.is_success() {
            let redirect = text::parse(&pdu.data)
                .ok()
                .and_then(|pairs| pairs.into_iter().find(|p| p.key == "TargetAddress"))
                .map(|p| p.value);
            return Err(LoginError::Refused {
                status: rsp.status,
                redirect,
            });
        }
        self.check_header(rsp)?;
        self.exp_stat_sn.received(rsp.stat_sn);
        let Some(text) = self.text.push(&pdu.data, rsp.cont)? else {
            // The target's text continues: ask for the rest (RFC 7143 6.3).
            return Ok(InitiatorStep::Send(self.request(false, self.stage, &[])));
        };
        let pairs = text::parse(&text)?;
        let (security, operational): (Vec<Pair>, Vec<Pair>) = pairs.into_iter().partition(|p| is_security_key(&p.key));

        let mut replies = Vec::new();
        if self.stage == Stage::SECURITY_NEGOTIATION {
            self.authenticate(&security, rsp.transit, &mut replies)?;
        }
        replies.extend(self.negotiator.receive(&operational, self.stage)?);

        if rsp.transit {
            if rsp.nsg == Stage::FULL_FEATURE_PHASE {
                return Ok(InitiatorStep::Complete(Box::new(self.outcome(rsp))));
            }
            self.stage = rsp.nsg;
        }
        if self.stage == Stage::OPERATIONAL_NEGOTIATION {
            replies.extend(self.negotiator.offers(self.stage));
        }
        let ready = self.auth == Auth::Done || matches!(self.auth, Auth::ChapResponse { .. });
        let next = if self.stage == Stage::SECURITY_NEGOTIATION {
            Stage::OPERATIONAL_NEGOTIATION
        } else {
            Stage::FULL_FEATURE_PHASE
        };
        Ok(InitiatorStep::Send(self.request(ready, next, &replies)))
    }

    fn check_header(&self, rsp: &LoginResponse) -> Result<(), LoginError> {
        if rsp.isid != self.config.isid || rsp.itt != self.config.itt {
            return Err(LoginError::Protocol("Login Response for another ISID or ITT"));
        }
        if rsp.version_active != ISCSI_VERSION {
            return Err(LoginError::UnsupportedVersion {
                min: rsp.version_active,
                max: rsp.version_max,
            });
        }
        if rsp.csg != self.stage || (rsp.transit && rsp.cont) {
            return Err(LoginError::Protocol("Login Response stage does not follow ours"));
        }
        if rsp.transit && !(rsp.nsg.is_valid() && rsp.nsg > rsp.csg) {
            return Err(LoginError::Protocol("Login Response NSG does not follow CSG"));
        }
        Ok(())
    }

    fn authenticate(&mut self, pairs: &[Pair], transit: bool, replies: &mut Vec<Pair>) -> Result<(), LoginError> {
        let value = |key: &str| pairs.iter().find(|p| p.key == key).map(|p| p.value.as_str());
        match &self.auth {
            Auth::Offered => match value("AuthMethod") {
                Some("CHAP") if self.config.chap.is_some() => {
                    let codes: Vec<String> = self
                        .config
                        .chap_algorithms
                        .iter()
                        .map(|a| a.code().to_string())
                        .collect();
                    replies.push(Pair::new("CHAP_A", codes.join(",")));
                    self.auth = Auth::ChapAlgorithm;
                }
                Some(answer::NONE) | None if self.config.mutual.is_none() => self.auth = Auth::Done,
                Some(answer::NONE) | None => {
                    return Err(LoginError::Authentication("the target did not agree to mutual CHAP"));
                }
                Some(_) => return Err(LoginError::Authentication("no common AuthMethod")),
            },
            Auth::ChapAlgorithm => {
                let algorithm = value("CHAP_A")
                    .and_then(ChapAlgorithm::from_code)
                    .filter(|a| self.config.chap_algorithms.contains(a))
                    .ok_or(LoginError::Authentication(
                        "the target chose a CHAP algorithm we did not offer",
                    ))?;
                let id = value("CHAP_I")
                    .and_then(text::parse_number)
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(LoginError::Authentication("missing or invalid CHAP_I"))?;
                let challenge = text::decode_binary(value("CHAP_C").unwrap_or_default())?;
                if challenge.is_empty() || challenge.len() > 1024 {
                    return Err(LoginError::Authentication("unacceptable CHAP challenge"));
                }
                let creds = self
                    .config
                    .chap
                    .as_ref()
                    .ok_or(LoginError::Authentication("no CHAP credentials"))?;
                // Neither our answer nor the target's may rest on a short secret.
                creds.check()?;
                if let Some(mutual) = &self.config.mutual {
                    mutual.check()?;
                }
                let response = algorithm.response(id, &creds.secret, &challenge);
                replies.push(Pair::new("CHAP_N", creds.name.clone()));
                replies.push(Pair::new("CHAP_R", text::encode_binary(&response)));
                let mutual = self.config.mutual.as_ref().map(|_| {
                    let our_id = self.nonce[0];
                    let mut ours = self.nonce[16..16 + algorithm.digest_len()].to_vec();
                    // Never send back the challenge we were given (RFC 7143 12.1.3).
                    if ours == challenge {
                        ours[0] ^= 0xff;
                    }
                    replies.push(Pair::new("CHAP_I", our_id.to_string()));
                    replies.push(Pair::new("CHAP_C", text::encode_binary(&ours)));
                    (our_id, ours)
                });
                self.auth = Auth::ChapResponse { algorithm, mutual };
            }
            Auth::ChapResponse { algorithm, mutual } => {
                if let (Some((id, challenge)), Some(target)) = (mutual, &self.config.mutual) {
                    let name = value("CHAP_N");
                    let response = value("CHAP_R").map(text::decode_binary).transpose()?;
                    let verified = name == Some(target.name.as_str())
                        && response.is_some_and(|r| algorithm.verify(*id, &target.secret, challenge, &r));
                    if !verified {
                        return Err(LoginError::Authentication("the target failed mutual CHAP"));
                    }
                }
                self.auth = Auth::Done;
            }
            Auth::Done => {}
        }
        if transit && self.auth != Auth::Done {
            return Err(LoginError::Authentication(
                "the target left security negotiation before authentication ended",
            ));
        }
        Ok(())
    }

    fn request(&self, transit: bool, nsg: Stage, pairs: &[Pair]) -> Pdu {
        let header = LoginRequest {
            transit,
            cont: false,
            csg: self.stage,
            nsg: if transit { nsg } else { Stage(0) },
            version_max: ISCSI_VERSION,
            version_min: ISCSI_VERSION,
            isid: self.config.isid,
            tsih: Tsih(0),
            itt: self.config.itt,
            cid: self.config.cid,
            cmd_sn: self.config.cmd_sn,
            exp_stat_sn: self.exp_stat_sn.get(),
        };
        Pdu::with_data(header, text::encode(pairs))
    }

    fn outcome(&self, rsp: &LoginResponse) -> LoginOutcome {
        let (session, connection) = self.negotiator.finish();
        LoginOutcome {
            session_type: self.session_type(),
            initiator_name: self.config.initiator_name.clone(),
            initiator_alias: self.config.initiator_alias.clone(),
            target_name: self.config.target_name.clone(),
            isid: self.config.isid,
            tsih: rsp.tsih,
            cid: self.config.cid,
            session,
            connection,
            cmd_sn: self.config.cmd_sn,
            stat_sn: self.exp_stat_sn.get(),
            max_cmd_sn: rsp.max_cmd_sn,
            chap_name: self.config.chap.as_ref().map(|c| c.name.clone()),
        }
    }
}
