//! A stream entry's fields, as a worker turns them into a task (`Delivery::from_fields`): any
//! list of fields, the ones it reads often among them, with numbers or anything as values.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchyard::engine::{entry_of_task, task_id_for_entry};
use switchyard::model::Lane;

#[derive(Arbitrary, Debug)]
enum Name {
    Kind,
    Id,
    Payload,
    At,
    Max,
    Base,
    Okey,
    Seq,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Number(u64),
    Signed(i64),
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    part: u16,
    lane: u8,
    /// The entry id as `<ms>-<seq>`, or any text.
    entry: Result<(u64, u64), String>,
    fields: Vec<(Name, Text)>,
    deliveries: u32,
}

fuzz_target!(|input: Input| {
    let lane = Lane::ALL[usize::from(input.lane) % Lane::ALL.len()];
    let part = usize::from(input.part);
    let entry = match &input.entry {
        Ok((ms, seq)) => format!("{ms}-{seq}"),
        Err(s) => s.clone(),
    };
    let fields: Vec<(String, String)> = input
        .fields
        .iter()
        .map(|(name, text)| {
            let name = match name {
                Name::Kind => "kind",
                Name::Id => "id",
                Name::Payload => "payload",
                Name::At => "at",
                Name::Max => "max",
                Name::Base => "base",
                Name::Okey => "okey",
                Name::Seq => "seq",
                Name::Other(s) => s,
            };
            let text = match text {
                Text::Number(n) => n.to_string(),
                Text::Signed(n) => n.to_string(),
                Text::Any(s) => s.clone(),
            };
            (name.to_string(), text)
        })
        .collect();
    let Some(t) = switchyard::fuzzing::task_entry(part, lane, &entry, &fields, input.deliveries) else { return };
    let named = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    assert_eq!(Some(t.kind.as_str()), named("kind"));
    assert_eq!(t.unrecorded, named("id").is_none());
    if t.unrecorded {
        // Named after its entry: the id leads back to it (for entry ids such as Redis writes:
        // ms in 48 bits, seq in 62).
        assert_eq!(task_id_for_entry(part, lane, &entry).as_deref(), Some(t.id.as_str()));
        if let Ok((ms, seq)) = input.entry
            && seq < 1 << 62
            && ms < 1 << 48
        {
            assert_eq!(entry_of_task(&t.id), Some((part, lane, entry)));
        }
    }
});
