//! The message layer: SML_Message and every SML v1 message body.

use crate::crc::{CrcKind, CrcMode};
use crate::quirks;
use crate::tl::{Cursor, ParseError, ParseErrorKind, Result};
use crate::value::{octet_list, time, time_opt, value_opt, Bytes, ListEntry, Time, Tree, Value};

pub mod tag {
    pub const OPEN_REQUEST: u32 = 0x0100;
    pub const OPEN_RESPONSE: u32 = 0x0101;
    pub const CLOSE_REQUEST: u32 = 0x0200;
    pub const CLOSE_RESPONSE: u32 = 0x0201;
    pub const GET_PROFILE_PACK_REQUEST: u32 = 0x0300;
    pub const GET_PROFILE_PACK_RESPONSE: u32 = 0x0301;
    pub const GET_PROFILE_LIST_REQUEST: u32 = 0x0400;
    pub const GET_PROFILE_LIST_RESPONSE: u32 = 0x0401;
    pub const GET_PROC_PARAMETER_REQUEST: u32 = 0x0500;
    pub const GET_PROC_PARAMETER_RESPONSE: u32 = 0x0501;
    pub const SET_PROC_PARAMETER_REQUEST: u32 = 0x0600;
    /// Not in the spec (an AttentionResponse answers a SetProcParameterRequest),
    /// but some gateways send it; it carries the same fields as the request.
    pub const SET_PROC_PARAMETER_RESPONSE: u32 = 0x0601;
    pub const GET_LIST_REQUEST: u32 = 0x0700;
    pub const GET_LIST_RESPONSE: u32 = 0x0701;
    pub const ATTENTION_RESPONSE: u32 = 0xff01;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRequest<'a> {
    pub codepage: Option<Bytes<'a>>,
    pub client_id: Bytes<'a>,
    pub req_file_id: Bytes<'a>,
    pub server_id: Option<Bytes<'a>>,
    pub username: Option<Bytes<'a>>,
    pub password: Option<Bytes<'a>>,
    pub sml_version: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenResponse<'a> {
    pub codepage: Option<Bytes<'a>>,
    pub client_id: Option<Bytes<'a>>,
    pub req_file_id: Bytes<'a>,
    pub server_id: Bytes<'a>,
    pub ref_time: Option<Time>,
    pub sml_version: Option<u8>,
}

/// GetProfilePackRequest and GetProfileListRequest share one layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProfileRequest<'a> {
    pub server_id: Option<Bytes<'a>>,
    pub username: Option<Bytes<'a>>,
    pub password: Option<Bytes<'a>>,
    pub with_rawdata: Option<bool>,
    pub begin_time: Option<Time>,
    pub end_time: Option<Time>,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub object_list: Option<Vec<Bytes<'a>>>,
    pub das_details: Option<Tree<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfObjHeaderEntry<'a> {
    pub obj_name: Bytes<'a>,
    pub unit: u8,
    pub scaler: i8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueEntry<'a> {
    pub value: Option<Value<'a>>,
    pub value_signature: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfObjPeriodEntry<'a> {
    pub val_time: Time,
    pub status: u64,
    pub values: Vec<ValueEntry<'a>>,
    pub period_signature: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProfilePackResponse<'a> {
    pub server_id: Bytes<'a>,
    pub act_time: Time,
    pub reg_period: u32,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub header_list: Vec<ProfObjHeaderEntry<'a>>,
    pub period_list: Vec<ProfObjPeriodEntry<'a>>,
    pub rawdata: Option<Bytes<'a>>,
    pub profile_signature: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProfileListResponse<'a> {
    pub server_id: Bytes<'a>,
    pub act_time: Time,
    pub reg_period: u32,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub val_time: Time,
    pub status: u64,
    pub period_list: Vec<crate::value::PeriodEntry<'a>>,
    pub rawdata: Option<Bytes<'a>>,
    pub period_signature: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProcParameterRequest<'a> {
    pub server_id: Option<Bytes<'a>>,
    pub username: Option<Bytes<'a>>,
    pub password: Option<Bytes<'a>>,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub attribute: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProcParameterResponse<'a> {
    pub server_id: Bytes<'a>,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub parameter_tree: Tree<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetProcParameterRequest<'a> {
    pub server_id: Option<Bytes<'a>>,
    pub username: Option<Bytes<'a>>,
    pub password: Option<Bytes<'a>>,
    pub parameter_tree_path: Vec<Bytes<'a>>,
    pub parameter_tree: Tree<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetListRequest<'a> {
    pub client_id: Bytes<'a>,
    pub server_id: Option<Bytes<'a>>,
    pub username: Option<Bytes<'a>>,
    pub password: Option<Bytes<'a>>,
    pub list_name: Option<Bytes<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetListResponse<'a> {
    pub client_id: Option<Bytes<'a>>,
    pub server_id: Bytes<'a>,
    pub list_name: Option<Bytes<'a>>,
    pub act_sensor_time: Option<Time>,
    pub values: Vec<ListEntry<'a>>,
    pub list_signature: Option<Bytes<'a>>,
    pub act_gateway_time: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionResponse<'a> {
    pub server_id: Bytes<'a>,
    pub attention_no: Bytes<'a>,
    pub attention_msg: Option<Bytes<'a>>,
    pub attention_details: Option<Tree<'a>>,
}

/// Rare, large bodies are boxed so that the common push-meter messages
/// (Open/GetList/Close) stay small to move around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    OpenRequest(OpenRequest<'a>),
    OpenResponse(OpenResponse<'a>),
    CloseRequest {
        global_signature: Option<Bytes<'a>>,
    },
    CloseResponse {
        global_signature: Option<Bytes<'a>>,
    },
    GetProfilePackRequest(Box<GetProfileRequest<'a>>),
    GetProfilePackResponse(Box<GetProfilePackResponse<'a>>),
    GetProfileListRequest(Box<GetProfileRequest<'a>>),
    GetProfileListResponse(Box<GetProfileListResponse<'a>>),
    GetProcParameterRequest(Box<GetProcParameterRequest<'a>>),
    GetProcParameterResponse(Box<GetProcParameterResponse<'a>>),
    SetProcParameterRequest(Box<SetProcParameterRequest<'a>>),
    SetProcParameterResponse(Box<SetProcParameterRequest<'a>>),
    GetListRequest(Box<GetListRequest<'a>>),
    GetListResponse(GetListResponse<'a>),
    AttentionResponse(Box<AttentionResponse<'a>>),
    /// A tag this decoder does not know: the body element is kept as raw bytes.
    Unknown {
        tag: u32,
        raw: Bytes<'a>,
    },
}

impl Body<'_> {
    #[must_use]
    pub fn tag(&self) -> u32 {
        match self {
            Body::OpenRequest(_) => tag::OPEN_REQUEST,
            Body::OpenResponse(_) => tag::OPEN_RESPONSE,
            Body::CloseRequest { .. } => tag::CLOSE_REQUEST,
            Body::CloseResponse { .. } => tag::CLOSE_RESPONSE,
            Body::GetProfilePackRequest(_) => tag::GET_PROFILE_PACK_REQUEST,
            Body::GetProfilePackResponse(_) => tag::GET_PROFILE_PACK_RESPONSE,
            Body::GetProfileListRequest(_) => tag::GET_PROFILE_LIST_REQUEST,
            Body::GetProfileListResponse(_) => tag::GET_PROFILE_LIST_RESPONSE,
            Body::GetProcParameterRequest(_) => tag::GET_PROC_PARAMETER_REQUEST,
            Body::GetProcParameterResponse(_) => tag::GET_PROC_PARAMETER_RESPONSE,
            Body::SetProcParameterRequest(_) => tag::SET_PROC_PARAMETER_REQUEST,
            Body::SetProcParameterResponse(_) => tag::SET_PROC_PARAMETER_RESPONSE,
            Body::GetListRequest(_) => tag::GET_LIST_REQUEST,
            Body::GetListResponse(_) => tag::GET_LIST_RESPONSE,
            Body::AttentionResponse(_) => tag::ATTENTION_RESPONSE,
            Body::Unknown { tag, .. } => *tag,
        }
    }

    /// The name the Python API reports as `message["type"]`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Body::OpenRequest(_) => "OpenRequest",
            Body::OpenResponse(_) => "OpenResponse",
            Body::CloseRequest { .. } => "CloseRequest",
            Body::CloseResponse { .. } => "CloseResponse",
            Body::GetProfilePackRequest(_) => "GetProfilePackRequest",
            Body::GetProfilePackResponse(_) => "GetProfilePackResponse",
            Body::GetProfileListRequest(_) => "GetProfileListRequest",
            Body::GetProfileListResponse(_) => "GetProfileListResponse",
            Body::GetProcParameterRequest(_) => "GetProcParameterRequest",
            Body::GetProcParameterResponse(_) => "GetProcParameterResponse",
            Body::SetProcParameterRequest(_) => "SetProcParameterRequest",
            Body::SetProcParameterResponse(_) => "SetProcParameterResponse",
            Body::GetListRequest(_) => "GetListRequest",
            Body::GetListResponse(_) => "GetListResponse",
            Body::AttentionResponse(_) => "AttentionResponse",
            Body::Unknown { .. } => "Unknown",
        }
    }
}

/// SML_Message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub transaction_id: Bytes<'a>,
    pub group_no: u8,
    pub abort_on_error: u8,
    pub body: Body<'a>,
    /// The crc16 field as sent (`None` when the sender left it out).
    pub crc: Option<u16>,
    pub crc_ok: bool,
}

#[inline]
fn opt_bytes<'a>(c: &mut Cursor<'a>) -> Result<Option<Bytes<'a>>> {
    c.octets_opt()
}

#[inline]
fn bytes<'a>(c: &mut Cursor<'a>) -> Result<Bytes<'a>> {
    c.octets()
}

#[inline]
fn u8_opt(c: &mut Cursor<'_>, what: &'static str) -> Result<Option<u8>> {
    let at = c.pos();
    match c.unsigned_opt(what)? {
        Some(v) => u8::try_from(v)
            .map(Some)
            .map_err(|_| ParseErrorKind::OutOfRange { at, what, value: i128::from(v) }.into()),
        None => Ok(None),
    }
}

fn profile_request<'a>(c: &mut Cursor<'a>) -> Result<GetProfileRequest<'a>> {
    c.list_of(9, "GetProfileRequest")?;
    Ok(GetProfileRequest {
        server_id: opt_bytes(c)?,
        username: opt_bytes(c)?,
        password: opt_bytes(c)?,
        with_rawdata: c.boolean_opt()?,
        begin_time: time_opt(c)?,
        end_time: time_opt(c)?,
        parameter_tree_path: octet_list(c)?,
        object_list: if c.not_set() { None } else { Some(octet_list(c)?) },
        das_details: Tree::parse_opt(c, 0)?,
    })
}

fn proc_set<'a>(c: &mut Cursor<'a>) -> Result<SetProcParameterRequest<'a>> {
    c.list_of(5, "SetProcParameterRequest")?;
    Ok(SetProcParameterRequest {
        server_id: opt_bytes(c)?,
        username: opt_bytes(c)?,
        password: opt_bytes(c)?,
        parameter_tree_path: octet_list(c)?,
        parameter_tree: Tree::parse(c, 0)?,
    })
}

#[allow(clippy::inline_always)] // see parse_body
#[inline(always)]
fn get_list_response<'a>(c: &mut Cursor<'a>) -> Result<GetListResponse<'a>> {
    c.list_of(7, "GetListResponse")?;
    let client_id = opt_bytes(c)?;
    let server_id = bytes(c)?;
    let list_name = opt_bytes(c)?;
    let act_sensor_time = time_opt(c)?;
    let n = c.list()?;
    let mut values = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        ListEntry::parse_into(c, &mut values)?;
    }
    quirks::apply_get_list(server_id, &mut values);
    Ok(GetListResponse {
        client_id,
        server_id,
        list_name,
        act_sensor_time,
        values,
        list_signature: opt_bytes(c)?,
        act_gateway_time: time_opt(c)?,
    })
}

/// Inlined into [`parse_message`] (its only caller): a `Body` returned from a
/// separate function was copied with wider loads than it had been written
/// with, a store-forwarding stall per message (measured: parse 3 % faster).
#[allow(clippy::inline_always)]
#[inline(always)]
fn parse_body<'a>(c: &mut Cursor<'a>, tag: u32) -> Result<Body<'a>> {
    Ok(match tag {
        tag::OPEN_REQUEST => {
            c.list_of(7, "OpenRequest")?;
            Body::OpenRequest(OpenRequest {
                codepage: opt_bytes(c)?,
                client_id: bytes(c)?,
                req_file_id: bytes(c)?,
                server_id: opt_bytes(c)?,
                username: opt_bytes(c)?,
                password: opt_bytes(c)?,
                sml_version: u8_opt(c, "smlVersion")?,
            })
        }
        tag::OPEN_RESPONSE => {
            c.list_of(6, "OpenResponse")?;
            Body::OpenResponse(OpenResponse {
                codepage: opt_bytes(c)?,
                client_id: opt_bytes(c)?,
                req_file_id: bytes(c)?,
                server_id: bytes(c)?,
                ref_time: time_opt(c)?,
                sml_version: u8_opt(c, "smlVersion")?,
            })
        }
        tag::CLOSE_REQUEST | tag::CLOSE_RESPONSE => {
            c.list_of(1, "Close")?;
            let global_signature = opt_bytes(c)?;
            if tag == tag::CLOSE_REQUEST {
                Body::CloseRequest { global_signature }
            } else {
                Body::CloseResponse { global_signature }
            }
        }
        tag::GET_PROFILE_PACK_REQUEST => Body::GetProfilePackRequest(Box::new(profile_request(c)?)),
        tag::GET_PROFILE_LIST_REQUEST => Body::GetProfileListRequest(Box::new(profile_request(c)?)),
        tag::GET_PROFILE_PACK_RESPONSE => {
            c.list_of(8, "GetProfilePackResponse")?;
            let server_id = bytes(c)?;
            let act_time = time(c)?;
            let reg_period = c.unsigned_max("regPeriod", u32::MAX.into())? as u32;
            let parameter_tree_path = octet_list(c)?;
            let n = c.list()?;
            let mut header_list = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                c.list_of(3, "SML_ProfObjHeaderEntry")?;
                header_list.push(ProfObjHeaderEntry {
                    obj_name: bytes(c)?,
                    unit: c.unsigned_max("unit", 255)? as u8,
                    scaler: c.signed("scaler", i8::MIN.into(), i8::MAX.into())? as i8,
                });
            }
            let n = c.list()?;
            let mut period_list = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                c.list_of(4, "SML_ProfObjPeriodEntry")?;
                let val_time = time(c)?;
                let status = c.unsigned("status")?;
                let m = c.list()?;
                let mut values = Vec::with_capacity(m.min(64));
                for _ in 0..m {
                    c.list_of(2, "SML_ValueEntry")?;
                    values.push(ValueEntry { value: value_opt(c)?, value_signature: opt_bytes(c)? });
                }
                period_list.push(ProfObjPeriodEntry {
                    val_time,
                    status,
                    values,
                    period_signature: opt_bytes(c)?,
                });
            }
            Body::GetProfilePackResponse(Box::new(GetProfilePackResponse {
                server_id,
                act_time,
                reg_period,
                parameter_tree_path,
                header_list,
                period_list,
                rawdata: opt_bytes(c)?,
                profile_signature: opt_bytes(c)?,
            }))
        }
        tag::GET_PROFILE_LIST_RESPONSE => {
            c.list_of(9, "GetProfileListResponse")?;
            let server_id = bytes(c)?;
            let act_time = time(c)?;
            let reg_period = c.unsigned_max("regPeriod", u32::MAX.into())? as u32;
            let parameter_tree_path = octet_list(c)?;
            let val_time = time(c)?;
            let status = c.unsigned("status")?;
            let n = c.list()?;
            let mut period_list = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                period_list.push(crate::value::PeriodEntry::parse(c)?);
            }
            Body::GetProfileListResponse(Box::new(GetProfileListResponse {
                server_id,
                act_time,
                reg_period,
                parameter_tree_path,
                val_time,
                status,
                period_list,
                rawdata: opt_bytes(c)?,
                period_signature: opt_bytes(c)?,
            }))
        }
        tag::GET_PROC_PARAMETER_REQUEST => {
            c.list_of(5, "GetProcParameterRequest")?;
            Body::GetProcParameterRequest(Box::new(GetProcParameterRequest {
                server_id: opt_bytes(c)?,
                username: opt_bytes(c)?,
                password: opt_bytes(c)?,
                parameter_tree_path: octet_list(c)?,
                attribute: opt_bytes(c)?,
            }))
        }
        tag::GET_PROC_PARAMETER_RESPONSE => {
            c.list_of(3, "GetProcParameterResponse")?;
            Body::GetProcParameterResponse(Box::new(GetProcParameterResponse {
                server_id: bytes(c)?,
                parameter_tree_path: octet_list(c)?,
                parameter_tree: Tree::parse(c, 0)?,
            }))
        }
        tag::SET_PROC_PARAMETER_REQUEST => Body::SetProcParameterRequest(Box::new(proc_set(c)?)),
        tag::SET_PROC_PARAMETER_RESPONSE => Body::SetProcParameterResponse(Box::new(proc_set(c)?)),
        tag::GET_LIST_REQUEST => {
            c.list_of(5, "GetListRequest")?;
            Body::GetListRequest(Box::new(GetListRequest {
                client_id: bytes(c)?,
                server_id: opt_bytes(c)?,
                username: opt_bytes(c)?,
                password: opt_bytes(c)?,
                list_name: opt_bytes(c)?,
            }))
        }
        tag::GET_LIST_RESPONSE => Body::GetListResponse(get_list_response(c)?),
        tag::ATTENTION_RESPONSE => {
            c.list_of(4, "AttentionResponse")?;
            Body::AttentionResponse(Box::new(AttentionResponse {
                server_id: bytes(c)?,
                attention_no: bytes(c)?,
                attention_msg: opt_bytes(c)?,
                attention_details: Tree::parse_opt(c, 0)?,
            }))
        }
        _ => {
            let start = c.pos();
            c.skip(0)?;
            Body::Unknown { tag, raw: &c.data()[start..c.pos()] }
        }
    })
}

/// One message of a file: parsed, or the reason it could not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageResult<'a> {
    Ok(Message<'a>),
    /// The message at payload byte `offset` failed; `skipped` says whether its
    /// extent could still be found so the following messages were read.
    Err {
        offset: usize,
        error: ParseError,
        skipped: bool,
    },
}

/// Parses one SML_Message starting at the cursor.
#[inline]
pub fn parse_message<'a>(c: &mut Cursor<'a>, frame_crc: CrcKind, mode: CrcMode) -> Result<Message<'a>> {
    let start = c.pos();
    c.list_of(6, "SML_Message")?;
    let transaction_id = bytes(c)?;
    let group_no = c.unsigned_max("groupNo", 255)? as u8;
    let abort_on_error = c.unsigned_max("abortOnError", 255)? as u8;
    c.list_of(2, "SML_MessageBody")?;
    let tag = c.unsigned_max("message body tag", u32::MAX.into())? as u32;
    let body = parse_body(c, tag)?;
    let crc_at = c.pos();
    // ISKRA MT631/MT691 shorten the field to `62 XX` when the value fits a byte.
    let crc = c.unsigned_opt("crc16")?.map(|v| v as u16);
    if !c.end_of_message() {
        return Err(ParseErrorKind::MissingEndOfMessage { at: c.pos() }.into());
    }
    let covered = &c.data()[start..crc_at];
    let crc_ok = crc.is_some_and(|field| {
        mode.candidates(frame_crc).iter().any(|k| k.message_field(k.compute(covered)) == field)
    });
    Ok(Message { transaction_id, group_no, abort_on_error, body, crc, crc_ok })
}

/// Parses an SML file (a transport payload) into messages. Zero bytes between
/// messages are skipped (libsml does too; some senders pad messages).
#[must_use]
pub fn parse_file(payload: &[u8], frame_crc: CrcKind, mode: CrcMode) -> Vec<MessageResult<'_>> {
    let mut out = Vec::with_capacity(3);
    let mut c = Cursor::new(payload);
    loop {
        while c.end_of_message() {}
        if c.is_empty() {
            break;
        }
        let start = c.pos();
        match parse_message(&mut c, frame_crc, mode) {
            Ok(m) => out.push(MessageResult::Ok(m)),
            Err(error) => {
                // Re-walk the message generically: if its TL structure holds, the
                // failure was in one body and the next messages are still readable.
                let mut probe = Cursor::at(payload, start);
                let skipped = probe.skip(0).is_ok();
                out.push(MessageResult::Err { offset: start, error, skipped });
                if !skipped {
                    break;
                }
                c = probe;
            }
        }
    }
    out
}
