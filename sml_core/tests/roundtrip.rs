//! Property test: arbitrary valid SML messages → encode → decode gives the
//! messages back, for both CRC kinds, odd integer widths, long TL fields and
//! escape sequences anywhere in the payload.

use proptest::prelude::*;
use sml_core::encode::{encode, int_width, uint_width};
use sml_core::message::{AttentionResponse, GetListResponse, GetProcParameterResponse, OpenResponse};
use sml_core::value::{quirk, ListEntry, ProcParValue, Time, TimeKind, Tree, Value};
use sml_core::{decode_with, quirks, Body, CrcKind, CrcMode, Message, MessageResult, Outcome};

type B = &'static [u8];

/// Messages borrow their octet strings; generated ones are leaked so that
/// they live as long as the (short) test process.
fn leak(v: Vec<u8>) -> B {
    Box::leak(v.into_boxed_slice())
}

/// Octet strings biased towards escape bytes so that `1b1b1b1b` runs appear.
fn octets(max: usize) -> impl Strategy<Value = B> {
    prop::collection::vec(prop_oneof![3 => Just(0x1bu8), 1 => Just(0u8), 4 => any::<u8>()], 0..max)
        .prop_map(leak)
}

fn opt_octets(max: usize) -> impl Strategy<Value = Option<B>> {
    prop::option::of(octets(max))
}

fn time() -> impl Strategy<Value = Time> {
    (0..3u8, any::<u32>(), any::<i16>(), any::<i16>()).prop_map(|(k, value, lo, so)| match k {
        0 => Time::sec_index(value),
        1 => Time::timestamp(value),
        _ => Time { kind: TimeKind::LocalTimestamp, value, local_offset: lo, season_offset: so, bare: false },
    })
}

fn value() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        octets(40).prop_map(Value::Bytes),
        (1..=8u8, any::<i64>()).prop_map(|(w, v)| {
            let v = if w == 8 { v } else { (v << (64 - 8 * u32::from(w))) >> (64 - 8 * u32::from(w)) };
            Value::Int { value: v, width: w.max(int_width(v)) }
        }),
        (1..=8u8, any::<u64>()).prop_map(|(w, v)| {
            let v = if w == 8 { v } else { v & ((1u64 << (8 * u32::from(w))) - 1) };
            Value::UInt { value: v, width: w.max(uint_width(v)) }
        }),
        time().prop_map(Value::Time),
    ]
}

fn entry() -> impl Strategy<Value = ListEntry<'static>> {
    (
        prop::collection::vec(any::<u8>(), 6).prop_map(leak),
        prop::option::of(any::<u64>()),
        prop::option::of(time()),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<i8>()),
        prop::option::of(value()),
        opt_octets(20),
    )
        .prop_map(|(obj_name, status, val_time, unit, scaler, value, value_signature)| ListEntry {
            obj_name,
            status,
            val_time,
            unit,
            scaler,
            quirks: if value.is_none() { quirk::MISSING_VALUE } else { 0 },
            value,
            value_signature,
        })
}

fn tree(depth: u32) -> BoxedStrategy<Tree<'static>> {
    let leaf = (octets(8), prop::option::of(value())).prop_map(|(name, v)| Tree {
        parameter_name: name,
        parameter_value: v.map(ProcParValue::Value),
        children: None,
    });
    if depth == 0 {
        return leaf.boxed();
    }
    (octets(8), prop::option::of(time()), prop::option::of(prop::collection::vec(tree(depth - 1), 0..3)))
        .prop_map(|(name, t, children)| Tree {
            parameter_name: name,
            parameter_value: t.map(ProcParValue::Time),
            children,
        })
        .boxed()
}

fn body() -> impl Strategy<Value = Body<'static>> {
    prop_oneof![
        (
            opt_octets(4),
            opt_octets(8),
            octets(12),
            octets(12),
            prop::option::of(time()),
            prop::option::of(any::<u8>())
        )
            .prop_map(|(codepage, client_id, req_file_id, server_id, ref_time, sml_version)| {
                Body::OpenResponse(OpenResponse {
                    codepage,
                    client_id,
                    req_file_id,
                    server_id,
                    ref_time,
                    sml_version,
                })
            }),
        (
            opt_octets(8),
            octets(12),
            opt_octets(6),
            prop::option::of(time()),
            prop::collection::vec(entry(), 0..24),
            opt_octets(300),
            prop::option::of(time()),
        )
            .prop_map(
                |(client_id, server_id, list_name, act_sensor_time, mut values, list_signature, gw)| {
                    quirks::apply_get_list(server_id, &mut values);
                    Body::GetListResponse(GetListResponse {
                        client_id,
                        server_id,
                        list_name,
                        act_sensor_time,
                        values,
                        list_signature,
                        act_gateway_time: gw,
                    })
                }
            ),
        opt_octets(70).prop_map(|global_signature| Body::CloseResponse { global_signature }),
        (octets(10), octets(6), opt_octets(30), prop::option::of(tree(2))).prop_map(|(s, n, m, d)| {
            Body::AttentionResponse(Box::new(AttentionResponse {
                server_id: s,
                attention_no: n,
                attention_msg: m,
                attention_details: d,
            }))
        }),
        (octets(10), prop::collection::vec(octets(6), 0..4), tree(3)).prop_map(|(s, p, t)| {
            Body::GetProcParameterResponse(Box::new(GetProcParameterResponse {
                server_id: s,
                parameter_tree_path: p,
                parameter_tree: t,
            }))
        }),
    ]
}

fn message() -> impl Strategy<Value = Message<'static>> {
    (octets(10), any::<u8>(), any::<u8>(), body()).prop_map(|(tx, g, a, body)| Message {
        // An empty octet string and "not set" share the byte 01; keep ids non-empty.
        transaction_id: if tx.is_empty() { &[7u8][..] } else { tx },
        group_no: g,
        abort_on_error: a,
        body,
        crc: None,
        crc_ok: true,
    })
}

/// `01` means both "empty octet string" and "not set"; the decoder reads an
/// optional empty string back as not set, so expected values use that form.
fn normalise(m: &mut Message<'_>) {
    fn fix(o: &mut Option<&[u8]>) {
        if o.as_ref().is_some_and(|b| b.is_empty()) {
            *o = None;
        }
    }
    fn fix_value(v: &mut Option<Value<'_>>, quirks: &mut u8) {
        if matches!(v, Some(Value::Bytes(b)) if b.is_empty()) {
            *v = None;
            *quirks |= quirk::MISSING_VALUE;
        }
    }
    match &mut m.body {
        Body::OpenResponse(r) => {
            fix(&mut r.codepage);
            fix(&mut r.client_id);
        }
        Body::GetListResponse(r) => {
            fix(&mut r.client_id);
            fix(&mut r.list_name);
            fix(&mut r.list_signature);
            for e in &mut r.values {
                fix(&mut e.value_signature);
                fix_value(&mut e.value, &mut e.quirks);
            }
        }
        Body::CloseResponse { global_signature } => fix(global_signature),
        // Inside a tree a value of `01` is an empty octet string (the
        // SML_ProcParValue around it is present), so trees need no change.
        Body::AttentionResponse(r) => fix(&mut r.attention_msg),
        _ => {}
    }
}

fn roundtrip(messages: &[Message<'static>], kind: CrcKind) -> Vec<String> {
    let bytes = encode(messages, kind);
    let mut got = Vec::new();
    let mut frames = 0;
    decode_with(&bytes, CrcMode::Auto, |f| {
        frames += 1;
        assert_eq!(f.crc, Some(kind));
        let Outcome::Ok(ms) = f.outcome else { panic!("frame failed: {:?}", f.outcome) };
        for m in ms {
            let MessageResult::Ok(mut m) = m else { panic!("message failed: {m:?}") };
            assert!(m.crc_ok);
            m.crc = None;
            got.push(format!("{m:?}"));
        }
    });
    assert_eq!(frames, 1);
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_the_messages_back(messages in prop::collection::vec(message(), 1..4), kermit in any::<bool>()) {
        let kind = if kermit { CrcKind::Kermit } else { CrcKind::X25 };
        let want: Vec<String> = messages.iter().cloned().map(|mut m| { normalise(&mut m); format!("{m:?}") }).collect();
        prop_assert_eq!(roundtrip(&messages, kind), want);
    }

    #[test]
    fn garbage_between_frames_is_skipped(messages in prop::collection::vec(message(), 1..3), garbage in prop::collection::vec(any::<u8>(), 0..40)) {
        let frame = encode(&messages, CrcKind::X25);
        let mut stream = garbage.clone();
        stream.extend_from_slice(&frame);
        stream.extend_from_slice(&garbage);
        stream.extend_from_slice(&frame);
        let mut ok = 0;
        decode_with(&stream, CrcMode::Auto, |f| ok += usize::from(matches!(f.outcome, Outcome::Ok(_))));
        // Garbage can at most fake a start sequence that swallows nothing valid.
        prop_assert!(ok >= 1);
        let mut clean = frame.clone();
        clean.extend_from_slice(&frame);
        let mut ok = 0;
        decode_with(&clean, CrcMode::Auto, |f| ok += usize::from(matches!(f.outcome, Outcome::Ok(_))));
        prop_assert_eq!(ok, 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_agrees(data in prop::collection::vec(prop_oneof![2 => Just(0x1bu8), 1 => Just(1u8), 1 => Just(0x1au8), 4 => any::<u8>()], 0..600), cut in 1usize..64) {
        let mut whole = Vec::new();
        decode_with(&data, CrcMode::Auto, |f| whole.push(format!("{f:?}")));
        let mut parts = Vec::new();
        let mut d = sml_core::Decoder::new(CrcMode::Auto);
        for c in data.chunks(cut) {
            d.feed(c, |f| parts.push(format!("{f:?}")));
        }
        d.finish(|f| parts.push(format!("{f:?}")));
        prop_assert_eq!(whole, parts);
    }
}
