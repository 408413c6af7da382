//! Replies. The built-in responder needs nothing external: intent rules over the message and the
//! conversation so far, in English or Spanish as the customer writes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Greeting,
    Pricing,
    Shipping,
    OrderStatus,
    Complaint,
    Handoff,
    Fallback,
}

impl Intent {
    pub const ALL: [Intent; 7] = [
        Intent::Greeting,
        Intent::Pricing,
        Intent::Shipping,
        Intent::OrderStatus,
        Intent::Complaint,
        Intent::Handoff,
        Intent::Fallback,
    ];

    /// Its name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Greeting => "greeting",
            Intent::Pricing => "pricing",
            Intent::Shipping => "shipping",
            Intent::OrderStatus => "order_status",
            Intent::Complaint => "complaint",
            Intent::Handoff => "handoff",
            Intent::Fallback => "fallback",
        }
    }

    pub fn parse(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Es,
}

/// One message of a conversation, as the responder sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub from_customer: bool,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub intent: Intent,
    pub language: Language,
    /// The conversation goes to a person: automatic replies stop until it is released.
    pub handoff: bool,
}

/// Words that mark an intent, by language; matched on whole words of the lower-cased text.
const RULES: &[(Intent, &[&str])] = &[
    (
        Intent::Handoff,
        &["human", "agent", "person", "representative", "operator", "humano", "agente", "persona", "asesor"],
    ),
    (
        Intent::Complaint,
        &[
            "broken",
            "damaged",
            "refund",
            "complaint",
            "terrible",
            "awful",
            "angry",
            "worst",
            "roto",
            "dañado",
            "reembolso",
            "queja",
            "pésimo",
            "molesto",
        ],
    ),
    (Intent::OrderStatus, &["order", "tracking", "track", "status", "pedido", "orden", "seguimiento", "rastreo"]),
    (
        Intent::Shipping,
        &["ship", "shipping", "deliver", "delivery", "envío", "envio", "envían", "envian", "entrega", "despacho"],
    ),
    (
        Intent::Pricing,
        &[
            "price", "prices", "cost", "costs", "much", "pricing", "precio", "precios", "cuesta", "cuánto", "cuanto",
            "vale",
        ],
    ),
    (
        Intent::Greeting,
        &["hi", "hello", "hey", "morning", "afternoon", "evening", "hola", "buenos", "buenas", "saludos"],
    ),
];

const SPANISH: &[&str] = &[
    "hola", "buenos", "buenas", "gracias", "quiero", "cuánto", "cuanto", "precio", "envío", "envio", "pedido", "dónde",
    "donde", "está", "esta", "mi", "por", "favor", "tienen", "hacen", "qué", "que", "necesito", "humano", "queja",
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

pub fn detect_language(text: &str) -> Language {
    let w = words(text);
    let es = w.iter().filter(|x| SPANISH.contains(&x.as_str())).count();
    if es * 3 >= w.len().max(1) && es > 0 || text.contains(['¿', '¡', 'ñ']) { Language::Es } else { Language::En }
}

pub fn classify(text: &str) -> Intent {
    let w = words(text);
    RULES
        .iter()
        .find(|(_, keys)| w.iter().any(|x| keys.contains(&x.as_str())))
        .map(|(intent, _)| *intent)
        .unwrap_or(Intent::Fallback)
}

fn text_for(intent: Intent, lang: Language) -> &'static str {
    use Intent::*;
    use Language::*;
    match (intent, lang) {
        (Greeting, En) => "Hi! Thanks for writing. How can I help you today?",
        (Greeting, Es) => "¡Hola! Gracias por escribirnos. ¿En qué te puedo ayudar?",
        (Pricing, En) => {
            "Our prices are on each product page, and plans start at $19/month. Which product are you interested in?"
        }
        (Pricing, Es) => {
            "Los precios están en cada página de producto y los planes empiezan en $19 al mes. ¿Qué producto te interesa?"
        }
        (Shipping, En) => "We ship to most countries. Standard delivery takes 3–7 business days; express takes 1–3.",
        (Shipping, Es) => {
            "Enviamos a la mayoría de países. El envío estándar tarda de 3 a 7 días hábiles; el exprés, de 1 a 3."
        }
        (OrderStatus, En) => "I can check that for you. What is your order number?",
        (OrderStatus, Es) => "Con gusto lo reviso. ¿Cuál es tu número de pedido?",
        (Complaint, En) => {
            "I'm sorry about this. I've flagged your conversation and a member of our team will follow up shortly."
        }
        (Complaint, Es) => {
            "Lamento mucho lo ocurrido. Marqué tu conversación y alguien de nuestro equipo te contactará pronto."
        }
        (Handoff, En) => "I'm connecting you with a person from our team. They'll reply here as soon as they can.",
        (Handoff, Es) => "Te comunico con una persona de nuestro equipo. Te responderá aquí lo antes posible.",
        (Fallback, En) => {
            "Thanks for your message! I can help with prices, shipping and orders, or connect you with a person."
        }
        (Fallback, Es) => {
            "¡Gracias por tu mensaje! Puedo ayudarte con precios, envíos y pedidos, o comunicarte con una persona."
        }
    }
}

/// The built-in responder: rules over the message, with the conversation's history for context
/// (an order number right after we asked for one is an order-status follow-up).
pub fn respond(history: &[Turn], message: &str) -> Reply {
    let language = detect_language(message);
    let mut intent = classify(message);
    let asked_for_order =
        history.iter().rev().find(|t| !t.from_customer).and_then(|t| t.intent) == Some(Intent::OrderStatus);
    let digits: String = message.chars().filter(char::is_ascii_digit).collect();
    if intent == Intent::Fallback && asked_for_order && digits.len() >= 4 {
        let text = match language {
            Language::En => format!(
                "Thanks! Order {digits} is being prepared and you'll get tracking details by email as soon as it ships."
            ),
            Language::Es => format!(
                "¡Gracias! El pedido {digits} está en preparación y recibirás el seguimiento por correo cuando salga."
            ),
        };
        return Reply { text, intent: Intent::OrderStatus, language, handoff: false };
    }
    if intent == Intent::Fallback && history.is_empty() && message.trim().len() < 3 {
        intent = Intent::Greeting;
    }
    Reply {
        text: text_for(intent, language).to_string(),
        intent,
        language,
        handoff: matches!(intent, Intent::Handoff | Intent::Complaint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_in_both_languages() {
        let cases = [
            ("hello there", Intent::Greeting, Language::En),
            ("Hola, buenos días", Intent::Greeting, Language::Es),
            ("how much does the pro plan cost?", Intent::Pricing, Language::En),
            ("¿Cuánto cuesta el plan?", Intent::Pricing, Language::Es),
            ("hello, do you ship to Lima? #12", Intent::Shipping, Language::En),
            ("hacen envío a Lima?", Intent::Shipping, Language::Es),
            ("where is my order", Intent::OrderStatus, Language::En),
            ("the box arrived broken, I want a refund", Intent::Complaint, Language::En),
            ("I want to talk to a human", Intent::Handoff, Language::En),
            ("quiero hablar con un humano por favor", Intent::Handoff, Language::Es),
            ("purple elephants", Intent::Fallback, Language::En),
        ];
        for (text, intent, lang) in cases {
            let r = respond(&[], text);
            assert_eq!((r.intent, r.language), (intent, lang), "{text}");
            assert!(!r.text.is_empty());
        }
    }

    #[test]
    fn complaints_and_handoffs_go_to_a_person() {
        assert!(respond(&[], "this is the worst service").handoff);
        assert!(respond(&[], "agent please").handoff);
        assert!(!respond(&[], "hi").handoff);
    }

    #[test]
    fn history_turns_an_order_number_into_a_status_answer() {
        let history = vec![
            Turn { from_customer: true, text: "where is my order?".into(), intent: Some(Intent::OrderStatus) },
            Turn { from_customer: false, text: "What is your order number?".into(), intent: Some(Intent::OrderStatus) },
        ];
        let r = respond(&history, "it's 48213");
        assert_eq!(r.intent, Intent::OrderStatus);
        assert!(r.text.contains("48213"), "{}", r.text);
        // Without that question, a number alone is not an order.
        assert_eq!(respond(&[], "48213").intent, Intent::Fallback);
    }
}
