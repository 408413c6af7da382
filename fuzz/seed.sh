#!/usr/bin/env bash
# Seeds the fuzz targets' corpora (fuzz/corpus/<target>/, not kept in git) with a few bodies of
# each format, and the JSON of tests/fixtures for the generic route, which takes any JSON (the
# fixtures hold no webhook of the other formats).
# Files already there are left alone; libFuzzer adds what it finds beside them.
set -euo pipefail
cd "$(dirname "$0")"

seed() { # target name content
    mkdir -p "corpus/$1"
    [ -e "corpus/$1/seed-$2" ] || printf '%s' "$3" >"corpus/$1/seed-$2"
}
b64() { printf '%s' "$1" | base64 -w0; }

seed meta messenger '{"object":"page","entry":[{"id":"P1","time":1,"messaging":[{"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197627,"message":{"mid":"m_1","text":"hi","quick_reply":{"payload":"Q"}}},{"sender":{"id":"P1"},"recipient":{"id":"U1"},"timestamp":"1457764197628","message":{"mid":"m_2","text":"hello","is_echo":true}},{"sender":{"id":"U1"},"delivery":{"mids":["m_2"],"watermark":1457764197628}},{"sender":{"id":"U1"},"read":{"watermark":1457764197628}},{"sender":{"id":"U1"},"postback":{"title":"Start","payload":"GET_STARTED","mid":"m_3"}}],"standby":[{"sender":{"id":"U2"},"message":{"mid":"m_4"}}]}]}'
seed meta instagram '{"object":"instagram","entry":[{"id":"IG1","time":1,"messaging":[{"sender":{"id":"S"},"recipient":{"id":"IG1"},"timestamp":5,"message":{"mid":"ig_m","text":"caf\u00e9 \ud83d\ude00"}}],"changes":[{"field":"comments","value":{"id":"c1","from":{"id":"S"},"text":"nice"}}]}]}'
seed meta whatsapp '{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PN1"},"contacts":[{"profile":{"name":"Ann"},"wa_id":"4477"}],"messages":[{"from":"4477","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"price?"}},{"from":"4477","id":"wamid.C","timestamp":1700000002,"type":"interactive","interactive":{"button_reply":{"id":"b","title":"Yes"}}}],"statuses":[{"id":"wamid.B","status":"read","timestamp":"1700000001","recipient_id":"4477"}]}}]}]}'
seed meta unreadable '{"object":"page","entry":[1,{"id":"P","messaging":["x",{"sender":{"id":"U"},"message":null}],"changes":7}]}'

pubsub_data=$(b64 '{"review":{"name":"r1","starRating":"FIVE"}}')
seed google pubsub "{\"message\":{\"data\":\"$pubsub_data\",\"messageId\":\"111\",\"publishTime\":\"2026-01-01T00:00:00.123Z\",\"attributes\":{\"k\":\"v\"}},\"subscription\":\"projects/p/subscriptions/s\"}"
seed google pubsub-snake "{\"message\":{\"data\":\"$pubsub_data\",\"message_id\":\"\",\"publish_time\":\"2026-01-01T00:00:00Z\"},\"subscription\":\"s\"}"
rbm_message=$(b64 '{"senderPhoneNumber":"+12223334444","messageId":"msg-1","sendTime":"2026-01-01T00:00:00Z","agentId":"bot@rbm.goog","text":"Hi"}')
seed google rbm-message "{\"message\":{\"data\":\"$rbm_message\",\"messageId\":\"2\"},\"subscription\":\"s\"}"
rbm_event=$(b64 '{"senderPhoneNumber":"+1","eventType":"READ","eventId":"ev-9","messageId":"msg-1","agentId":"a","sendTime":"2026-01-01T00:00:00.5Z"}')
seed google rbm-event "{\"message\":{\"data\":\"$rbm_event\",\"messageId\":\"3\"},\"subscription\":\"s\"}"
rbm_reply=$(b64 '{"senderPhoneNumber":"+1","suggestionResponse":{"postbackData":"yes","text":"Yes"}}')
seed google rbm-suggestion "{\"message\":{\"data\":\"$rbm_reply\"},\"subscription\":\"s\"}"

# RBM's data as it is, for the second reading of every input.
seed google rbm-data '{"senderPhoneNumber":"+12223334444","messageId":"","sendTime":"2026-01-01T00:00:00.999999Z","agentId":"bot@rbm.goog","suggestionResponse":{"text":"Yes","postbackData":"yes"}}'
seed google rbm-data-event '{"senderPhoneNumber":"+1","eventType":"DELIVERED","messageId":"msg-1","sendTime":"2026-01-01T00:00:00Z"}'

seed generic event '{"id":"e-1","customer":"c-9","text":"order shipped","amount":12.5,"tags":["a","b"]}'
seed generic no-id '{"event_id":" ","customer":42,"text":null,"nested":{"deep":[1,2,{"x":"\u00e9"}]}}'
for f in ../tests/fixtures/*.json; do
    [ -e "$f" ] && { [ -e "corpus/generic/fixture-$(basename "$f")" ] || cp "$f" "corpus/generic/fixture-$(basename "$f")"; }
done
mkdir -p corpus/task_entry
