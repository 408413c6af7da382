//! A conversation's turns and figures.

use super::*;
use crate::conversation::flow::key_for_id;
use crate::conversation::store::Store;

struct TurnRow {
    at: String,
    who: String,
    kind: String,
    text: String,
}

struct ConversationView {
    id: String,
    handed_off: bool,
    customer_turns: u64,
    agent_turns: u64,
    created: String,
    updated: String,
    turns: Vec<TurnRow>,
    analytics: String,
}

#[derive(Template)]
#[template(path = "conversations.html")]
struct ConversationsPage {
    csrf: String,
    nav: &'static str,
    query: String,
    missing: Option<String>,
    conversation: Option<ConversationView>,
    /// The latest conversations: id and time of the last turn.
    recent: Vec<(String, String)>,
}

pub(super) async fn conversations(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<IdQuery>) -> Page {
    let s = require(&state, &headers).await?;
    let query = q.id.trim().to_string();
    let (mut missing, mut conversation) = (None, None);
    if !query.is_empty() {
        let id = key_for_id(&query).id();
        let store = Store::new(state.engine.clone());
        let found = tokio::try_join!(
            store.summary(&id),
            store.history(&id, 200),
            crate::analytics::conversation::load(&state.engine, &id)
        );
        match found.map_err(failed)? {
            (Some(sum), turns, analytics) => {
                conversation = Some(ConversationView {
                    id: sum.conversation_id.clone(),
                    handed_off: sum.handed_off,
                    customer_turns: sum.customer_turns,
                    agent_turns: sum.agent_turns,
                    created: format_ms(sum.created_at),
                    updated: format_ms(sum.updated_at),
                    turns: turns
                        .iter()
                        .map(|t| TurnRow {
                            at: format_ms(t.at_ms),
                            who: serde_json::to_value(t.who)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            kind: t.kind.clone(),
                            text: t.text.clone(),
                        })
                        .collect(),
                    analytics: analytics.map(|a| pretty(&a)).unwrap_or_default(),
                })
            }
            (None, _, _) => missing = Some(format!("No conversation {id}.")),
        }
    }
    let recent = if conversation.is_none() {
        let recent = Store::new(state.engine.clone()).recent(50).await.map_err(failed)?;
        recent.into_iter().map(|(id, at)| (id, format_ms(at))).collect()
    } else {
        Vec::new()
    };
    Ok(render(ConversationsPage { csrf: s.csrf, nav: "conversations", query, missing, conversation, recent }))
}
