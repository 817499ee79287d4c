//! Synthetic English restaurant reviews over the study's 11 aspects.
//!
//! Every mentioned aspect gets one clause that carries its label; the clause's byte span is
//! the label's evidence. Clauses are built compositionally from per-aspect lexicons (subjects,
//! predicates by polarity, implicit clauses that never name the aspect) and frames (plain,
//! negated, hedged, expectation reversal, recommendation, mixed). Hard constructions defeat
//! keyword lookup: negation flips the polarity word, implicit clauses have no aspect keyword,
//! distractor sentences name an aspect of *another* place, and contrast joins put opposite
//! polarities in one sentence.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{SynthConfig, TextBuilder, capitalize, pick, rng};
use crate::error::{DataError, Result};
use crate::record::{AspectLabel, Domain, MasaRecord, Sentiment, Span};

/// The vocabulary of one aspect.
#[derive(Debug)]
pub struct AspectLexicon {
    /// Aspect key (one of the study's 11).
    pub key: &'static str,
    /// Nouns that name the aspect, with `true` for plural.
    pub nouns: &'static [(&'static str, bool)],
    /// Adjective phrases of positive polarity.
    pub positive: &'static [&'static str],
    /// Adjective phrases of negative polarity.
    pub negative: &'static [&'static str],
    /// Adjective phrases without polarity.
    pub neutral: &'static [&'static str],
    /// Positive clauses that do not name the aspect.
    pub implicit_positive: &'static [&'static str],
    /// Negative clauses that do not name the aspect.
    pub implicit_negative: &'static [&'static str],
    /// Mentions without an opinion.
    pub implicit_neutral: &'static [&'static str],
}

/// Lexicons of the study's 11 aspects, in the order of [`Domain::study_all`].
pub const LEXICONS: [AspectLexicon; 11] = [
    AspectLexicon {
        key: "food",
        nouns: &[
            ("food", false),
            ("dishes", true),
            ("pasta", false),
            ("steak", false),
            ("dumplings", true),
            ("curry", false),
            ("desserts", true),
        ],
        positive: &[
            "delicious",
            "perfectly seasoned",
            "fresh and flavourful",
            "cooked just right",
            "tasty",
            "outstanding",
        ],
        negative: &[
            "bland",
            "overcooked",
            "greasy",
            "stale",
            "cold and soggy",
            "tasteless",
        ],
        neutral: &[
            "okay",
            "average",
            "edible",
            "nothing special",
            "about what you would expect",
        ],
        implicit_positive: &[
            "I cleaned my plate and wanted seconds",
            "every bite had us reaching for more",
            "my partner is still talking about what we ate",
        ],
        implicit_negative: &[
            "half of what we ordered went back to the kitchen",
            "I left most of my plate untouched",
            "everything on the plate tasted like it had been reheated twice",
        ],
        implicit_neutral: &[
            "we ordered a few plates to share",
            "I had the set lunch",
            "we tried a couple of the specials",
        ],
    },
    AspectLexicon {
        key: "drinks",
        nouns: &[
            ("drinks", true),
            ("coffee", false),
            ("cocktails", true),
            ("wine", false),
            ("tea", false),
            ("smoothies", true),
        ],
        positive: &[
            "refreshing",
            "perfectly mixed",
            "excellent",
            "strong and smooth",
            "well balanced",
        ],
        negative: &["watered down", "flat", "far too sweet", "lukewarm", "weak"],
        neutral: &["standard", "okay", "nothing memorable", "ordinary"],
        implicit_positive: &[
            "I ordered a second round of that mango lassi straight away",
            "my glass of red paired beautifully with the meal",
            "the lemonade tasted like it was squeezed a minute ago",
        ],
        implicit_negative: &[
            "my latte tasted like dishwater",
            "the lemonade was mostly ice",
            "I could not finish my milkshake",
        ],
        implicit_neutral: &[
            "I just had a glass of water",
            "we each got a soda",
            "my friend had a beer with her meal",
        ],
    },
    AspectLexicon {
        key: "price",
        nouns: &[
            ("prices", true),
            ("bill", false),
            ("cost", false),
            ("price", false),
        ],
        positive: &[
            "reasonable",
            "a bargain",
            "very fair",
            "cheap for what you get",
            "affordable",
        ],
        negative: &[
            "outrageous",
            "far too high",
            "a rip-off",
            "steep",
            "overpriced",
        ],
        neutral: &[
            "average for the area",
            "typical",
            "about normal",
            "standard",
        ],
        implicit_positive: &[
            "dinner for two came to less than a cinema ticket",
            "we got change back from a twenty",
            "you get a lot for your money here",
        ],
        implicit_negative: &[
            "I nearly fainted when I saw the total",
            "my wallet is still recovering",
            "twelve dollars for a tiny side salad is hard to justify",
        ],
        implicit_neutral: &[
            "we paid by card",
            "we split the check",
            "they take cash and cards",
        ],
    },
    AspectLexicon {
        key: "hygiene",
        nouns: &[
            ("tables", true),
            ("restroom", false),
            ("floor", false),
            ("dining room", false),
            ("cutlery", false),
        ],
        positive: &[
            "spotless",
            "very clean",
            "sparkling clean",
            "immaculate",
            "well kept",
        ],
        negative: &["filthy", "sticky", "dirty", "grimy", "smelly"],
        neutral: &["clean enough", "acceptable", "reasonably tidy", "passable"],
        implicit_positive: &[
            "everything smelled of fresh soap",
            "they wiped down every surface between guests",
            "not a crumb was left anywhere",
        ],
        implicit_negative: &[
            "a cockroach strolled across the wall next to us",
            "our forks still had dried food on them",
            "there was hair in the sink",
        ],
        implicit_neutral: &[
            "a cleaner was mopping when we arrived",
            "the restroom is downstairs",
            "there is a hand-washing basin by the door",
        ],
    },
    AspectLexicon {
        key: "staff",
        nouns: &[
            ("staff", true),
            ("waiter", false),
            ("waitress", false),
            ("server", false),
            ("hostess", false),
            ("manager", false),
        ],
        positive: &[
            "friendly",
            "attentive",
            "very helpful",
            "warm and welcoming",
            "polite",
        ],
        negative: &["rude", "dismissive", "unfriendly", "careless", "arrogant"],
        neutral: &[
            "professional",
            "fine",
            "businesslike",
            "neither chatty nor cold",
        ],
        implicit_positive: &[
            "she remembered our names from last time",
            "he went out of his way to find a high chair for our son",
            "someone came over to check on us without being asked",
        ],
        implicit_negative: &[
            "she rolled her eyes when I asked for the check",
            "we were ignored for most of the night",
            "he argued with us about our order",
        ],
        implicit_neutral: &[
            "a young man took our order",
            "the person at the door showed us to a table",
            "a woman brought over the menus",
        ],
    },
    AspectLexicon {
        key: "parking",
        nouns: &[
            ("parking", false),
            ("car park", false),
            ("parking lot", false),
            ("parking spaces", true),
        ],
        positive: &["easy", "plentiful", "free and convenient", "ample"],
        negative: &[
            "impossible",
            "a nightmare",
            "scarce",
            "expensive",
            "terrible",
        ],
        neutral: &[
            "metered",
            "on the street",
            "standard",
            "shared with the shops",
        ],
        implicit_positive: &[
            "we pulled straight into a spot by the door",
            "there is a big free lot right behind the building",
            "we never have trouble leaving the car there",
        ],
        implicit_negative: &[
            "we circled the block for half an hour looking for a spot",
            "I got a ticket because there was nowhere to leave the car",
            "we ended up leaving the car a mile away",
        ],
        implicit_neutral: &[
            "we left the car around the corner",
            "we drove there",
            "my husband dropped us off and parked",
        ],
    },
    AspectLexicon {
        key: "transport",
        nouns: &[
            ("location", false),
            ("subway station", false),
            ("bus stop", false),
            ("commute", false),
        ],
        positive: &["convenient", "easy to reach", "central", "perfect"],
        negative: &["awkward", "remote", "hard to reach", "inconvenient"],
        neutral: &["okay", "manageable", "typical"],
        implicit_positive: &[
            "it is a two-minute walk from the metro",
            "three bus lines stop right outside",
            "we walked over from the train in no time",
        ],
        implicit_negative: &[
            "it took us two trains and a long walk to get there",
            "no taxi would come out that far",
            "the last bus back leaves at nine",
        ],
        implicit_neutral: &[
            "we took the bus",
            "we came by taxi",
            "we walked over from the museum",
        ],
    },
    AspectLexicon {
        key: "queueing",
        nouns: &[
            ("wait", false),
            ("queue", false),
            ("line", false),
            ("waiting list", false),
        ],
        positive: &["short", "non-existent", "quick", "reasonable"],
        negative: &["endless", "ridiculous", "painfully long", "unbearable"],
        neutral: &["typical for a weekend", "about twenty minutes", "average"],
        implicit_positive: &[
            "we were seated the moment we walked in",
            "there was a free table waiting for us",
            "nobody was ahead of us at the door",
        ],
        implicit_negative: &[
            "we stood outside for an hour before getting a table",
            "half the people waiting gave up and left",
            "we were told to come back in ninety minutes",
        ],
        implicit_neutral: &[
            "we put our name on the list",
            "we had booked a table in advance",
            "the host took our number at the door",
        ],
    },
    AspectLexicon {
        key: "serving_speed",
        nouns: &[
            ("service", false),
            ("order", false),
            ("turnaround", false),
            ("pace of the meal", false),
        ],
        positive: &[
            "fast",
            "quick",
            "prompt",
            "impressively speedy",
            "efficient",
        ],
        negative: &["painfully slow", "slow", "sluggish", "badly delayed"],
        neutral: &["steady", "about average", "unhurried"],
        implicit_positive: &[
            "the starters arrived before we had finished our first sip",
            "our plates were on the table within ten minutes",
            "everything came out at once, just minutes after we ordered",
        ],
        implicit_negative: &[
            "we waited forty minutes for the first course",
            "the dessert came out after we had asked for the check",
            "the table next to us got their meal twice before we saw ours",
        ],
        implicit_neutral: &[
            "we ordered at the counter",
            "dishes came out one at a time",
            "the courses were brought in the usual order",
        ],
    },
    AspectLexicon {
        key: "decor",
        nouns: &[
            ("decor", false),
            ("interior", false),
            ("furniture", false),
            ("lighting", false),
            ("walls", true),
        ],
        positive: &["stylish", "beautiful", "cosy", "tasteful", "charming"],
        negative: &["tacky", "shabby", "dated", "gloomy", "ugly"],
        neutral: &["simple", "plain", "ordinary", "modern"],
        implicit_positive: &[
            "every corner looked like it came out of a design magazine",
            "the old brick and warm lamps made it feel like home",
            "the room itself is a pleasure to sit in",
        ],
        implicit_negative: &[
            "the paint was peeling off in strips",
            "it looked like nobody had redone the place since the eighties",
            "the plastic flowers were covered in dust",
        ],
        implicit_neutral: &[
            "there is a big mural on one side",
            "the room has about twenty tables",
            "the chairs are wooden",
        ],
    },
    AspectLexicon {
        key: "noise",
        nouns: &[
            ("noise level", false),
            ("music", false),
            ("volume", false),
            ("background noise", false),
        ],
        positive: &[
            "pleasantly low",
            "kept low",
            "barely noticeable",
            "gentle",
            "comfortable",
        ],
        negative: &[
            "deafening",
            "far too loud",
            "unbearable",
            "overwhelming",
            "constant and grating",
        ],
        neutral: &["normal for a restaurant", "moderate", "about average"],
        implicit_positive: &[
            "we could talk without raising our voices",
            "it was the kind of place where you can hear yourself think",
            "even the table of ten next to us was easy to talk over",
        ],
        implicit_negative: &[
            "we had to shout to hear each other",
            "my ears were ringing when we left",
            "the speaker above our table made conversation impossible",
        ],
        implicit_neutral: &[
            "there was a band playing",
            "a football match was on the TV",
            "a radio was on in the background",
        ],
    },
];

const INTENSIFIERS: [&str; 6] = [
    "",
    "really ",
    "quite ",
    "truly ",
    "surprisingly ",
    "honestly ",
];
const OTHER_PLACES: [&str; 6] = [
    "the diner next door",
    "Luigi's",
    "a place in the old town",
    "my local cafe",
    "the hotel restaurant we stayed at",
    "the food court at the mall",
];
const OPENERS: [&str; 8] = [
    "We came here for my sister's birthday.",
    "I visited on a Friday evening with two colleagues.",
    "This was our second visit in a month.",
    "We stopped by after a long walk around town.",
    "A friend had recommended this spot.",
    "We went for an early dinner on a Sunday.",
    "I had been meaning to try this place for a while.",
    "We booked a table for four on a weekday.",
];
const FILLERS: [&str; 8] = [
    "It was a rainy evening.",
    "My brother had just got back from abroad.",
    "We talked about our holiday plans most of the night.",
    "The restaurant opened about a year ago.",
    "What a great evening with old friends.",
    "It was a terrible week at work, so we needed a night out.",
    "We ended up staying for almost three hours.",
    "Our daughter fell asleep halfway through.",
];
const CLOSERS: [&str; 6] = [
    "That is all I have to say.",
    "Make of that what you will.",
    "We will see if we come back.",
    "I wrote this on the way home.",
    "Just my two cents.",
    "Hope this helps someone.",
];

/// The lexicon of an aspect key, if the generator knows it.
pub fn lexicon(key: &str) -> Option<&'static AspectLexicon> {
    LEXICONS.iter().find(|l| l.key == key)
}

/// Keywords that name an aspect: its key and the last word of each noun (for baselines).
pub fn keywords(key: &str) -> Vec<String> {
    let mut out = vec![key.replace('_', " ")];
    if let Some(lex) = lexicon(key) {
        for (noun, _) in lex.nouns {
            out.push((*noun).to_string());
        }
    }
    out
}

/// A clause frame: how one labelled clause is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Plain,
    FoundIt,
    Negated,
    Expectation,
    Recommendation,
    Implicit,
    Mixed,
}

/// Explicit frames by label. Each is a template over `{S}` subject, `{V}` verb, `{P}` the
/// label's predicate, `{Q}` a predicate of the opposite polarity and `{R}` a pronoun.
fn templates(sentiment: Sentiment, frame: Frame) -> &'static [&'static str] {
    use Frame::*;
    use Sentiment::*;
    match (sentiment, frame) {
        (Positive | Negative, Plain) => &[
            "{S} {V} {I}{P}",
            "honestly, {S} {V} {P}",
            "{S} {V} {P}, as always",
            "{S} {V} {I}{P} that night",
        ],
        (Positive | Negative, FoundIt) => &[
            "I found {S} {I}{P}",
            "we all thought {S} {V} {P}",
            "to me, {S} {V} {P}",
        ],
        (Positive, Negated) => &[
            "{S} {V} anything but {Q}",
            "{S} {V} not {Q} at all",
            "nobody could call {S} {Q}",
            "{S} {V} never {Q}",
        ],
        (Negative, Negated) => &[
            "{S} {V} not {Q} at all",
            "{S} {V} far from {Q}",
            "I would not call {S} {Q}",
            "{S} {V} hardly {Q}",
        ],
        (Positive, Expectation) => &[
            "I was worried {S} would be {Q}, but {R} {V} {P}",
            "after the reviews I feared {S} would be {Q}, yet {R} turned out {P}",
        ],
        (Negative, Expectation) => &[
            "I expected {S} to be {Q}, but {R} {V} {P}",
            "everyone says {S} {V} {Q}, but tonight {R} {V} {P}",
        ],
        (Positive, Recommendation) => &[
            "{S} alone {V} worth the trip",
            "come for {S}, you will not regret it",
            "I would go back just for {S}",
        ],
        (Negative, Recommendation) => &[
            "do not come here for {S}",
            "skip this place if {S} matters to you",
            "I would not go back for {S}",
        ],
        (Neutral, Plain) => &[
            "{S} {V} {P}",
            "{S} {V} {P}, I suppose",
            "I found {S} {P}",
            "{S} {V} {P}, nothing more to say",
        ],
        (Neutral, Mixed) => &[
            "{S} {V} hit and miss, partly {A} and partly {B}",
            "{S} {V} neither {A} nor {B}",
            "some would call {S} {A}, others {B}, and I am somewhere in between",
        ],
        (Neutral, Negated) => &[
            "I have no strong feelings about {S}",
            "I cannot say {S} {V} good or bad",
        ],
        _ => &[],
    }
}

/// Number of distinct clause patterns the generator can produce for the known aspects
/// (frame template × subject × predicate, plus implicit clauses).
pub fn pattern_count() -> usize {
    use Frame::*;
    let mut n = 0;
    for lex in &LEXICONS {
        let subjects = lex.nouns.len() * 2;
        for (s, preds, opp) in [
            (Sentiment::Positive, lex.positive.len(), lex.negative.len()),
            (Sentiment::Negative, lex.negative.len(), lex.positive.len()),
        ] {
            n += templates(s, Plain).len() * subjects * preds * INTENSIFIERS.len();
            n += templates(s, FoundIt).len() * subjects * preds * INTENSIFIERS.len();
            n += templates(s, Negated).len() * subjects * opp;
            n += templates(s, Expectation).len() * subjects * preds * opp;
            n += templates(s, Recommendation).len() * subjects;
        }
        n += templates(Sentiment::Neutral, Plain).len() * subjects * lex.neutral.len();
        n += templates(Sentiment::Neutral, Mixed).len()
            * subjects
            * lex.positive.len()
            * lex.negative.len();
        n += templates(Sentiment::Neutral, Negated).len() * subjects;
        n += lex.implicit_positive.len() + lex.implicit_negative.len() + lex.implicit_neutral.len();
    }
    n
}

struct Clause {
    aspect: usize,
    sentiment: Sentiment,
    text: String,
}

fn subject(rng: &mut ChaCha8Rng, lex: &AspectLexicon) -> (String, bool) {
    let (noun, plural) = *pick(rng, lex.nouns);
    let det = if rng.random_bool(0.7) { "the" } else { "our" };
    (format!("{det} {noun}"), plural)
}

#[allow(clippy::too_many_arguments)]
fn fill(
    template: &str,
    subject: &str,
    plural: bool,
    p: &str,
    q: &str,
    i: &str,
    a: &str,
    b: &str,
) -> String {
    template
        .replace("{S}", subject)
        .replace("{V}", if plural { "were" } else { "was" })
        .replace("{R}", if plural { "they" } else { "it" })
        .replace("{P}", p)
        .replace("{Q}", q)
        .replace("{I}", i)
        .replace("{A}", a)
        .replace("{B}", b)
}

fn clause(
    rng: &mut ChaCha8Rng,
    lex: &AspectLexicon,
    aspect: usize,
    sentiment: Sentiment,
    difficulty: f64,
) -> Clause {
    use Frame::*;
    let hard = rng.random_bool((0.15 + 0.7 * difficulty).min(1.0));
    let frame = match sentiment {
        Sentiment::Neutral => {
            if hard {
                *pick(rng, &[Mixed, Negated, Implicit])
            } else {
                *pick(rng, &[Plain, Plain, Implicit])
            }
        }
        _ => {
            if hard {
                *pick(
                    rng,
                    &[Negated, Expectation, Implicit, Implicit, Recommendation],
                )
            } else {
                *pick(rng, &[Plain, FoundIt])
            }
        }
    };
    let text = if frame == Implicit {
        let options = match sentiment {
            Sentiment::Positive => lex.implicit_positive,
            Sentiment::Negative => lex.implicit_negative,
            _ => lex.implicit_neutral,
        };
        (*pick(rng, options)).to_string()
    } else {
        let (s, plural) = subject(rng, lex);
        let (same, opposite) = match sentiment {
            Sentiment::Positive => (lex.positive, lex.negative),
            Sentiment::Negative => (lex.negative, lex.positive),
            _ => (lex.neutral, lex.positive),
        };
        let p = *pick(rng, same);
        let q = *pick(rng, opposite);
        let i = *pick(rng, &INTENSIFIERS);
        let a = *pick(rng, lex.positive);
        let b = *pick(rng, lex.negative);
        let template = *pick(rng, templates(sentiment, frame));
        fill(template, &s, plural, p, q, i, a, b)
    };
    Clause {
        aspect,
        sentiment,
        text,
    }
}

fn distractor(rng: &mut ChaCha8Rng, lex: &AspectLexicon) -> String {
    let (noun, plural) = *pick(rng, lex.nouns);
    let v = if plural { "were" } else { "was" };
    let adj = if rng.random_bool(0.5) {
        *pick(rng, lex.positive)
    } else {
        *pick(rng, lex.negative)
    };
    let place = *pick(rng, &OTHER_PLACES);
    let it = if plural { "them" } else { "it" };
    let forms = [
        format!("A friend told me the {noun} at {place} {v} {adj}."),
        format!("At {place} last week, the {noun} {v} {adj}."),
        format!("I had read that the {noun} at {place} {v} {adj}, so we came here instead."),
        format!("I cannot comment on the {noun}, since we did not try {it}."),
        format!("My neighbour keeps saying the {noun} at {place} {v} {adj}."),
    ];
    pick(rng, &forms).clone()
}

/// One generated review with its clause-level evidence.
fn review(
    rng: &mut ChaCha8Rng,
    domain: &Domain,
    lexicons: &[&'static AspectLexicon],
    config: &SynthConfig,
    id: String,
) -> MasaRecord {
    let d = config.difficulty;
    let mut clauses = Vec::new();
    let mut unmentioned = Vec::new();
    for (i, lex) in lexicons.iter().enumerate() {
        if rng.random_bool(config.mention_rate) {
            let r: f64 = rng.random();
            let sentiment = if r < 0.45 {
                Sentiment::Positive
            } else if r < 0.78 {
                Sentiment::Negative
            } else {
                Sentiment::Neutral
            };
            clauses.push(clause(rng, lex, i, sentiment, d));
        } else {
            unmentioned.push(i);
        }
    }
    clauses.shuffle(rng);
    // Units: one clause, or two clauses of different polarity joined by a contrast.
    enum Unit {
        One(Clause),
        Two(Clause, &'static str, Clause),
        Plain(String),
    }
    let mut units: Vec<Unit> = Vec::new();
    let mut rest = clauses.into_iter().peekable();
    while let Some(first) = rest.next() {
        let join = rest
            .peek()
            .is_some_and(|next| next.sentiment != first.sentiment)
            && rng.random_bool(0.2 + 0.5 * d);
        if join {
            let second = rest.next().expect("peeked");
            let joiner = *pick(
                rng,
                &[", but ", ", while ", ", although ", "; on the other hand, "],
            );
            units.push(Unit::Two(first, joiner, second));
        } else {
            units.push(Unit::One(first));
        }
    }
    for &i in &unmentioned {
        if rng.random_bool(0.05 + 0.35 * d) {
            units.push(Unit::Plain(distractor(rng, lexicons[i])));
        }
    }
    if rng.random_bool(0.5) {
        units.push(Unit::Plain((*pick(rng, &FILLERS)).to_string()));
    }
    units.shuffle(rng);
    let mut builder = TextBuilder::default();
    let mut evidence: Vec<(usize, Sentiment, Span)> = Vec::new();
    let mut first_sentence = true;
    let space = |b: &mut TextBuilder, first: &mut bool| {
        if !*first {
            b.push(" ");
        }
        *first = false;
    };
    if rng.random_bool(0.6) {
        space(&mut builder, &mut first_sentence);
        builder.push(pick::<&str>(rng, &OPENERS));
    }
    for unit in units {
        space(&mut builder, &mut first_sentence);
        match unit {
            Unit::Plain(s) => {
                builder.push(&s);
            }
            Unit::One(c) => {
                let span = builder.push(&capitalize(&c.text));
                builder.push(".");
                evidence.push((c.aspect, c.sentiment, span));
            }
            Unit::Two(a, joiner, b) => {
                let sa = builder.push(&capitalize(&a.text));
                builder.push(joiner);
                let sb = builder.push(&b.text);
                builder.push(".");
                evidence.push((a.aspect, a.sentiment, sa));
                evidence.push((b.aspect, b.sentiment, sb));
            }
        }
    }
    if rng.random_bool(0.2) {
        space(&mut builder, &mut first_sentence);
        builder.push(pick::<&str>(rng, &CLOSERS));
    }
    evidence.sort_by_key(|(i, _, _)| *i);
    let mut labels = Vec::new();
    for (i, def) in domain.aspects.iter().enumerate() {
        let found = evidence.iter().find(|(a, _, _)| *a == i);
        let (mut sentiment, mut span) = match found {
            Some((_, s, span)) => (*s, Some(*span)),
            None => (Sentiment::Unmentioned, None),
        };
        if config.label_noise > 0.0 && rng.random_bool(config.label_noise) {
            let others: Vec<Sentiment> = Sentiment::ALL
                .into_iter()
                .filter(|s| *s != sentiment)
                .collect();
            sentiment = *pick(rng, &others);
            span = None;
        }
        if sentiment != Sentiment::Unmentioned {
            labels.push(AspectLabel {
                aspect: def.key.clone(),
                sentiment,
                evidence: span,
            });
        }
    }
    MasaRecord {
        id,
        text: builder.text,
        labels,
    }
}

/// Generates `count` reviews labelled over `domain`, whose aspect keys must all be among the
/// study's 11 (any subset, any order). Ids are `{prefix}/{index}`.
pub fn generate(
    domain: &Domain,
    config: &SynthConfig,
    seed: u64,
    count: usize,
    id_prefix: &str,
) -> Result<Vec<MasaRecord>> {
    config.validate()?;
    let mut lexicons = Vec::with_capacity(domain.aspects.len());
    for a in &domain.aspects {
        lexicons.push(lexicon(&a.key).ok_or_else(|| DataError::Invalid {
            what: "synthetic MASA domain",
            message: format!(
                "aspect `{}` has no lexicon (known: {})",
                a.key,
                LEXICONS.iter().map(|l| l.key).collect::<Vec<_>>().join(", ")
            ),
        })?);
    }
    let mut rng = rng(seed);
    Ok((0..count)
        .map(|i| {
            review(
                &mut rng,
                domain,
                &lexicons,
                config,
                format!("{id_prefix}/{i}"),
            )
        })
        .collect())
}

/// A keyword-lookup baseline: an aspect is mentioned when a sentence names one of its
/// [`keywords`]; its label is the majority polarity of the generator's predicate words in
/// those sentences (ties neutral). It is how well surface matching does on these reviews.
pub fn keyword_baseline(text: &str, domain: &Domain) -> Vec<Sentiment> {
    let lower = text.to_ascii_lowercase();
    let sentences: Vec<&str> = lower.split(['.', '!', '?']).collect();
    let has_phrase = |hay: &str, phrase: &str| {
        hay.match_indices(phrase).any(|(i, _)| {
            let before = hay[..i].chars().next_back();
            let after = hay[i + phrase.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
    };
    let count = |hay: &str, words: &mut dyn Iterator<Item = &&str>| {
        words.filter(|w| has_phrase(hay, w)).count()
    };
    domain
        .aspects
        .iter()
        .map(|a| {
            let keys = keywords(&a.key);
            let hits: Vec<&&str> = sentences
                .iter()
                .filter(|s| keys.iter().any(|k| has_phrase(s, k)))
                .collect();
            if hits.is_empty() {
                return Sentiment::Unmentioned;
            }
            let (mut pos, mut neg) = (0, 0);
            for s in hits {
                for lex in &LEXICONS {
                    pos += count(s, &mut lex.positive.iter());
                    neg += count(s, &mut lex.negative.iter());
                }
            }
            match pos.cmp(&neg) {
                std::cmp::Ordering::Greater => Sentiment::Positive,
                std::cmp::Ordering::Less => Sentiment::Negative,
                std::cmp::Ordering::Equal => Sentiment::Neutral,
            }
        })
        .collect()
}
