//! The seeded demo-data generator behind `inferencelab convert --generate-demo N --seed S`:
//! synthetic multi-turn chat conversations in the CSV schema `convert` reads. Nothing here is
//! real user data. Text is assembled from templated sentences over per-persona vocabularies, so
//! it reads like chat and tokenizes to realistic lengths; the distributions (data/README.md):
//!
//! - personas: six shared system prompts (about 60 to 650 tokens) with weights, plus 8% of
//!   conversations without a system prompt;
//! - turns per conversation: 1 to 10, P(n) proportional to 0.75^(n-1) (mean about 3.3);
//! - user messages: about 20 to 300 tokens (log-normal target, median 55 tokens; some paste code,
//!   logs or a document excerpt);
//! - answers: about 50 to 800 tokens (log-normal target, median 250 tokens);
//! - conversation starts: Poisson, one every 20 s on average, from 2025-06-02 09:00:00 UTC;
//! - time between a user's turns: the original server's response time (answer tokens at
//!   40-90 tokens/s plus 0.2-1 s) plus reading the answer (0.03-0.12 s per token), writing the
//!   next message (4-10 characters/s for typed text, pasted material counts 1/20) and an idle
//!   pause (log-normal, median 4 s, sigma 0.8); 5% of pauses are breaks (median 5 min).
//!
//! Token counts are estimated here as characters / 4.2 (English text with common BPE
//! tokenizers); the real count comes from the tokenizer `convert` uses.

use std::io::Write;

use crate::timestamp::format_datetime_ms;
use crate::workload::default_start_unix_ns;
use inferencelab_trace::rng::SplitMix64;

const CHARS_PER_TOKEN: f64 = 4.2;

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoStats {
    pub conversations: usize,
    pub turns: usize,
    pub bytes: u64,
}

struct Persona {
    name: &'static str,
    weight: f64,
    system: &'static str,
    /// Subjects the user asks about.
    topics: &'static [&'static str],
    /// First-message openers; `{t}` is a topic.
    asks: &'static [&'static str],
    /// Context sentences the user adds; `{t}` a topic, `{x}` a detail.
    context: &'static [&'static str],
    details: &'static [&'static str],
    /// Answer body sentences; `{t}` topic, `{x}` detail, `{s}` a step.
    explain: &'static [&'static str],
    steps: &'static [&'static str],
    /// Pasted material (code, logs, text) for user messages and answers.
    paste: Paste,
}

#[derive(Clone, Copy, PartialEq)]
enum Paste {
    Code,
    Log,
    Prose,
    Sql,
}

const GENERAL_SYSTEM: &str =
    "You are a helpful, honest and friendly assistant. Answer clearly and \
accurately. If you are not sure about something, say so instead of guessing. Keep answers focused \
on the user's question, use short paragraphs and lists where they help, and ask a clarifying \
question when the request is ambiguous.";

const CODING_SYSTEM: &str = "You are CodePilot, an expert software engineering assistant embedded \
in a developer's IDE.\n\nGuidelines:\n- Prefer correct, idiomatic and well-tested code over clever \
code. Follow the conventions of the language and of the surrounding code.\n- When you show code, \
show complete, runnable snippets in fenced code blocks with the language name, and explain the \
important lines afterwards.\n- When the user shares an error, first explain what the error means, \
then the most likely cause, then the fix.\n- Mention performance, security and concurrency \
pitfalls when they matter, but do not lecture.\n- If a question depends on versions (compiler, \
framework, library), say which versions your answer assumes.\n- Never invent APIs. If you are not \
certain a function exists, say so and suggest how to check the documentation.\n- Keep answers as \
short as the problem allows; the user is busy and reads your answer next to their code.\n\nThe \
user works mostly with Python, TypeScript, Rust and Go on Linux, deploys with Docker and \
Kubernetes, and uses PostgreSQL and Redis.";

const SUPPORT_SYSTEM: &str = "You are Nova, the virtual support agent of Northwind Fiber, a \
residential and small-business internet provider. You help customers over chat.\n\n## Tone\nBe \
warm, patient and concise. Use the customer's first name if they give it. Apologise once for an \
inconvenience, not in every message. Never blame the customer.\n\n## What you can do\n1. \
Troubleshoot connection problems: slow speeds, drop-outs, Wi-Fi coverage, router lights, DNS \
issues. Walk the customer through one step at a time and wait for the result before the next \
step.\n2. Explain plans and prices: Fiber 300 (300/300 Mbit/s, $45/month), Fiber 1000 \
(1000/1000 Mbit/s, $70/month), Fiber 2000 (2000/2000 Mbit/s, $95/month), Business Pro \
(1000/1000 Mbit/s with a static IP and 4-hour repair, $120/month). All plans have no data caps \
and no annual contract. Router rental is $8/month or free on Fiber 2000 and Business Pro.\n3. \
Explain bills: the first bill is prorated from the installation date; a $99 installation fee is \
waived for online orders; late payment fee is $10 after 15 days.\n4. Book a technician visit: \
offer the next three available slots (morning 8-12, afternoon 12-5) and collect the service \
address and a phone number.\n5. Check outages: if the customer's area has a known outage, say \
so, give the estimated repair time and do not troubleshoot further.\n\n## What you must not do\n\
- Do not promise refunds or credits above $20; create a ticket for the billing team instead.\n- \
Do not ask for full card numbers, passwords or one-time codes. To verify an account, ask for the \
account number and the service address ZIP code.\n- Do not give legal advice or discuss other \
customers.\n- If the customer asks to cancel, acknowledge it, mention the retention offer (two \
months at 50% off) once, and if they still want to cancel, transfer them to a human agent.\n\n\
## Escalation\nTransfer to a human agent when the customer asks for one, when the same problem \
was reported three times in 30 days, or after two unsuccessful troubleshooting rounds. Summarise \
the case in one paragraph for the agent before you transfer.";

const TRAVEL_SYSTEM: &str =
    "You are Wayfarer, a travel planning assistant. Help users plan trips: \
itineraries, transport between cities, neighbourhoods to stay in, food, budgets and packing. Ask \
for travel dates, budget and interests when they matter and the user has not given them. Give \
concrete suggestions with approximate prices in the local currency and in US dollars, and note \
when something needs to be booked in advance. Remind users to check entry requirements and \
official advisories, since you cannot see live information.";

const TUTOR_SYSTEM: &str = "You are a patient writing tutor for university students. Help them \
improve their essays, emails and reports: structure, clarity, grammar and tone. Explain why a \
change helps instead of only rewriting the text, and keep the student's own voice. Do not write \
whole assignments for them.";

const SQL_SYSTEM: &str = "You are DataBuddy, an analytics assistant for the Acme Retail data \
warehouse (PostgreSQL 16). Write correct, readable SQL and explain it briefly.\n\nSchema:\n- \
customers(customer_id bigint primary key, name text, email text, country text, created_at \
timestamptz, segment text) -- segment is one of 'consumer', 'smb', 'enterprise'\n- \
orders(order_id bigint primary key, customer_id bigint references customers, order_date date, \
status text, channel text, total_amount numeric(12,2)) -- status: 'placed', 'shipped', \
'delivered', 'returned', 'cancelled'\n- order_items(order_id bigint references orders, line_no \
int, product_id bigint references products, quantity int, unit_price numeric(10,2), discount \
numeric(4,3))\n- products(product_id bigint primary key, sku text, name text, category text, \
subcategory text, list_price numeric(10,2), launched_on date)\n- stores(store_id int primary \
key, city text, region text, opened_on date)\n- inventory(store_id int, product_id bigint, \
snapshot_date date, on_hand int)\n\nRules:\n- Revenue is sum(quantity * unit_price * (1 - \
discount)) over order_items of orders whose status is not 'cancelled' or 'returned'.\n- Use \
explicit JOINs, CTEs for multi-step logic, and date_trunc for time buckets.\n- Never run DELETE, \
UPDATE or DDL; you only write SELECT queries.\n- When a question is ambiguous (which date, which \
status), state your assumption in one sentence before the query.";

const PERSONAS: &[Persona] = &[
    Persona {
        name: "general",
        weight: 3.0,
        system: GENERAL_SYSTEM,
        topics: &["a healthy weekly meal plan", "how compound interest works", "the difference between weather and climate", "learning to play the guitar as an adult", "a birthday party for a seven-year-old", "how vaccines train the immune system", "choosing a used car", "why the sky is blue", "getting better sleep", "a beginner running schedule", "how credit scores are calculated", "keeping houseplants alive"],
        asks: &["Can you explain {t}?", "I'd like some help with {t}.", "What should I know about {t}?", "Quick question about {t}.", "Could you give me a simple overview of {t}?"],
        context: &["I'm a complete beginner, so please keep it simple.", "I have about {x} to spend on this.", "I read a few articles about {t} but they contradicted each other.", "My friend told me something about {x} and I'm not sure it's right.", "I only have {x} a week for this.", "Ideally the answer fits on one page."],
        details: &["two hours", "a small budget", "fifty dollars", "the weekends", "three kids at home", "a very old laptop", "no experience at all", "a tight schedule"],
        explain: &["The short version is that {t} comes down to a few simple ideas.", "A good way to think about it is to start from what you already know and build up.", "Most people overestimate how much effort the first step takes.", "It helps to separate what you can control from what you cannot.", "There is no single right answer here, but a few rules of thumb work for most people.", "The main thing to watch out for is doing too much too early, which is easy to overlook.", "Consistency matters more than intensity, especially in the first few weeks.", "If you want to go deeper later, look for material that explains the why, not just the how.", "Many common myths about {t} come from oversimplified headlines.", "A small, repeatable routine usually beats an ambitious plan you cannot keep."],
        steps: &["Write down what you want to achieve and by when.", "Start with the smallest version that still works.", "Check your progress once a week and adjust.", "Ask someone with experience to look at your plan.", "Keep notes so you can see what actually helped.", "Set a fixed budget and stick to it.", "Remove one obstacle before adding anything new."],
        paste: Paste::Prose,
    },
    Persona {
        name: "coding",
        weight: 3.0,
        system: CODING_SYSTEM,
        topics: &["reading a large CSV file in chunks", "retrying HTTP requests with exponential backoff", "a race condition in my worker pool", "parsing JSON with optional fields", "writing a Dockerfile for a Python web app", "connection pooling with PostgreSQL", "a Kubernetes liveness probe that keeps failing", "unit tests for code that calls the clock", "a memory leak in a long-running service", "structured logging", "rate limiting an API endpoint", "caching expensive function results with Redis"],
        asks: &["How do I handle {t} in {x}?", "I'm stuck on {t}. Can you help?", "What's the idiomatic way to do {t} in {x}?", "Can you review my approach to {t}?", "Why does my code for {t} behave strangely?"],
        context: &["I'm using {x} for this service.", "It works locally but fails in CI.", "The current version is too slow once the input gets bigger than a few hundred megabytes.", "Here is what I have so far:", "This is the error I get:", "I'd prefer not to add another dependency if possible.", "We deploy it as a container on Kubernetes with two replicas.", "The tests are flaky, maybe one run in ten fails."],
        details: &["Python 3.12", "TypeScript with Node 20", "Rust", "Go 1.22", "FastAPI", "asyncio", "tokio", "PostgreSQL 16", "Redis 7", "Express"],
        explain: &["The problem is that {t} is not safe when several workers touch the same state at once.", "What happens here is that the error is raised before the connection is returned to the pool.", "In {x} the usual approach is to keep the I/O at the edges and make the core logic pure, which also makes it easy to test.", "Note that this reads the whole file into memory; for large inputs stream it instead.", "You can make the behaviour deterministic in tests by injecting the clock instead of calling it directly.", "The retry loop should cap the total delay, otherwise a long outage blocks the caller forever.", "Keep the timeout shorter than the probe period, or Kubernetes will restart a healthy pod.", "This version allocates once per batch instead of once per row, which is where most of the time went.", "If you need stronger guarantees, wrap both writes in one transaction.", "One more thing: log the request id with every line so you can follow a request across services."],
        steps: &["Reproduce the problem with a minimal test.", "Add a timeout to every network call.", "Move the shared state behind a lock or a channel.", "Run the test suite with the race detector enabled.", "Measure before and after the change.", "Pin the dependency versions in the lock file.", "Add a regression test for the bug."],
        paste: Paste::Code,
    },
    Persona {
        name: "support",
        weight: 2.5,
        system: SUPPORT_SYSTEM,
        topics: &["my internet dropping every evening", "slow Wi-Fi upstairs", "a charge on my bill I don't recognise", "upgrading to Fiber 1000", "the router's red light", "moving to a new address", "booking a technician", "video calls freezing", "setting up a mesh network", "the installation fee"],
        asks: &["Hi, I have a problem with {t}.", "Hello, can you help me with {t}?", "Hi Nova, I need help with {t}.", "Good morning. I'm writing about {t}."],
        context: &["My account number is {x}.", "It has been like this for about a week.", "I already restarted the router twice.", "I work from home so this is really urgent.", "The speed test shows around {x} Mbit/s but I pay for more.", "This is the third time I'm contacting you about this.", "The router is in the basement next to the fuse box."],
        details: &["48213377", "39920417", "51177208", "120", "35", "800", "the evening"],
        explain: &["I'm sorry about the trouble with {t}, let's get it sorted out.", "Thanks for checking that, it helps narrow things down.", "I can see your line and there is no known outage in your area right now.", "Speeds over Wi-Fi are usually lower than over a cable, especially through floors and walls.", "A red light on the router usually means it has lost the fiber signal.", "Your first bill is prorated from the installation date, which is why it is higher than the monthly price.", "If the problem comes back after these steps, I can book a technician for you.", "Evening slow-downs are often caused by Wi-Fi interference from neighbouring networks rather than by the fiber line itself.", "Mesh systems work best when each unit can still see the previous one with a good signal.", "Moving to a new address is free if you tell us at least two weeks in advance.", "The next available technician slots are tomorrow afternoon, Thursday morning and Friday morning.", "Fiber 1000 costs $70 per month with no annual contract and no data cap.", "I have created a ticket for our billing team; they usually answer within two business days."],
        steps: &["Unplug the router's power cable, wait 30 seconds and plug it back in.", "Check that the green fiber cable is firmly clicked into the ONT.", "Run a speed test on a computer connected with an Ethernet cable.", "Move the router off the floor and away from metal objects.", "Tell me which lights are on and in which colour.", "Confirm the ZIP code of the service address."],
        paste: Paste::Log,
    },
    Persona {
        name: "travel",
        weight: 1.5,
        system: TRAVEL_SYSTEM,
        topics: &["a week in Japan in April", "a long weekend in Lisbon", "a road trip through the Scottish Highlands", "visiting Mexico City on a budget", "ten days in northern Italy by train", "a family trip to Iceland", "hiking in the Dolomites"],
        asks: &["I'm planning {t}. Where should I start?", "Can you help me plan {t}?", "What would you suggest for {t}?"],
        context: &["We are two adults and {x}.", "Our budget is around {x} without flights.", "We like food, museums and easy hikes.", "We'd rather not change hotels more than twice.", "It's our first time in the country."],
        details: &["a teenager", "2500 euros", "3000 dollars", "a toddler", "a dog", "very different interests"],
        explain: &["For {t}, the key decision is how many bases you use.", "Trains are usually the easiest way to get around, and booking a few weeks ahead saves a lot.", "Plan one slow day for every three busy ones, especially with children.", "Neighbourhoods near the old town are convenient but noisier at night.", "Prices below are rough and change with the season.", "Many museums are closed on Mondays, so check before you plan the day.", "Staying near a main station makes day trips much easier and saves time every morning.", "In spring the weather changes quickly, so pack layers and a light rain jacket.", "Lunch menus are often half the price of dinner at the same restaurant.", "A city pass only pays off if you visit at least three paid sights a day.", "Driving is relaxing in the countryside but parking in the old towns is difficult and expensive."],
        steps: &["Book the long-distance trains as soon as sales open.", "Reserve the popular restaurants a week ahead.", "Buy a local SIM card or an eSIM before you fly.", "Keep one flexible afternoon in case of rain.", "Check the entry requirements for your passport."],
        paste: Paste::Prose,
    },
    Persona {
        name: "tutor",
        weight: 1.0,
        system: TUTOR_SYSTEM,
        topics: &["the introduction of my essay", "an email to my professor", "the conclusion of my lab report", "my cover letter", "the structure of my literature review"],
        asks: &["Can you give me feedback on {t}?", "I'm not happy with {t}. What can I improve?", "Could you check the tone of {t}?"],
        context: &["Here it is:", "It's for a course on {x}.", "The limit is 500 words.", "My professor said it was too vague."],
        details: &["environmental policy", "European history", "organic chemistry", "marketing", "sociology"],
        explain: &["Your main argument is there, but it appears only in the last sentence; move it to the start.", "The second paragraph repeats the first in different words, so you can cut it.", "Try to replace general words like 'things' and 'aspects' with the specific thing you mean.", "The tone is polite, but a little too apologetic for a request that is perfectly reasonable.", "Each paragraph should make one point and show the evidence for it.", "Read it aloud; wherever you run out of breath, the sentence is probably too long.", "The first sentence should tell the reader why this matters to them.", "You use the passive voice a lot; active sentences are shorter and clearer.", "Your evidence is good, but you need one sentence that connects it to your claim.", "A short, specific subject line makes it more likely the email is read.", "The conclusion introduces a new idea; keep it for the discussion instead."],
        steps: &["State your thesis in one sentence.", "Cut the filler phrases at the start of sentences.", "Check that every paragraph supports the thesis.", "End with what the reader should do or remember."],
        paste: Paste::Prose,
    },
    Persona {
        name: "analytics",
        weight: 1.5,
        system: SQL_SYSTEM,
        topics: &["monthly revenue by region", "the top ten products by margin", "customers who churned last quarter", "average order value by channel", "stock-outs per store", "repeat purchase rate by segment"],
        asks: &["Can you write a query for {t}?", "I need {t} for a report.", "How would I get {t}?"],
        context: &["Only for {x}, please.", "The result goes into a dashboard that refreshes daily.", "My current query is slow:", "The numbers don't match what finance reports."],
        details: &["2024", "the enterprise segment", "online orders", "stores opened before 2020", "the last 90 days"],
        explain: &["I'll assume 'last quarter' means the last complete calendar quarter.", "The CTE computes revenue per order first, so the join to customers does not multiply rows.", "Returned and cancelled orders are excluded, as the revenue rule says.", "date_trunc keeps the buckets aligned to calendar months.", "An index on orders(order_date) will help this query a lot.", "The difference with finance is probably the treatment of discounts.", "Window functions such as lag() make the month-over-month change a single pass over the data.", "Counting distinct customers per month is the expensive part; pre-aggregating per day helps if the dashboard is slow.", "If a customer changed segment during the year, this query uses the current segment, which may not be what you want.", "Use a left join here, otherwise stores without any stock-outs disappear from the result.", "The filter on status belongs in the CTE, not in the outer query, or the averages will be off."],
        steps: &["Filter the orders by date first.", "Aggregate order_items per order.", "Join to customers for the segment.", "Compare the totals with the finance report for one month."],
        paste: Paste::Sql,
    },
];

const FOLLOW_UPS: &[&str] = &[
    "Thanks, that helps. What about {t}?",
    "That worked, thank you! One more thing: how would this change for {x}?",
    "I tried that but it didn't change anything.",
    "Can you explain the second point in more detail?",
    "Could you make that shorter? I need to send it to my team.",
    "OK. And what would you do differently if {x} mattered more?",
    "Hmm, I'm not sure I follow. Can you give me an example?",
    "Great. Can you put it all together in one final version?",
    "Is there a simpler way to do this?",
    "What are the risks if I skip the last step?",
];

const OPENERS: &[&str] = &[
    "Sure! Let's look at {t}.",
    "Good question. Here is how I would approach {t}.",
    "Happy to help with {t}.",
    "Thanks for the details, that makes it easier.",
    "Got it.",
    "Here's a summary, then the details.",
];

const CONNECTORS: &[&str] = &[
    "Also,",
    "In practice,",
    "That said,",
    "On top of that,",
    "In my experience,",
    "As a rule of thumb,",
    "Keep in mind that",
];

/// `Word ...` -> `word ...`, leaving acronyms and `I` alone.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_ascii_uppercase() && b.is_ascii_lowercase() => {
            let mut out = String::with_capacity(s.len());
            out.push(a.to_ascii_lowercase());
            out.push_str(&s[1..]);
            out
        }
        _ => s.to_string(),
    }
}

const LIST_LEADS: &[&str] = &[
    "Here is what I would do, in order:",
    "Step by step:",
    "A quick checklist:",
    "The steps for {t}:",
];

const CODE_LEADS: &[&str] = &[
    "Here is a version that does this:",
    "Something like this should work:",
    "For comparison, here is the pattern I mean:",
    "Here is the corrected version:",
];

const CLOSERS: &[&str] = &[
    "Let me know how it goes.",
    "Does that answer your question?",
    "If you share more details, I can make this more specific.",
    "Want me to go through any of these steps in more detail?",
    "Happy to help with the next part when you're ready.",
];

const CODE_SNIPPETS: &[&str] = &[
    "def load_rows(path):\n    with open(path) as f:\n        reader = csv.DictReader(f)\n        return [row for row in reader]\n\nrows = load_rows(\"events.csv\")\nprint(len(rows))",
    "async def fetch(session, url):\n    for attempt in range(5):\n        try:\n            async with session.get(url, timeout=10) as resp:\n                resp.raise_for_status()\n                return await resp.json()\n        except aiohttp.ClientError:\n            await asyncio.sleep(2 ** attempt)\n    raise RuntimeError(f\"giving up on {url}\")",
    "fn parse_line(line: &str) -> Result<Record, ParseError> {\n    let mut parts = line.split(',');\n    let id = parts.next().ok_or(ParseError::Missing(\"id\"))?.parse()?;\n    let name = parts.next().unwrap_or_default().to_string();\n    Ok(Record { id, name })\n}",
    "func worker(jobs <-chan Job, results chan<- Result, wg *sync.WaitGroup) {\n\tdefer wg.Done()\n\tfor j := range jobs {\n\t\tcache[j.Key] = process(j)\n\t\tresults <- Result{ID: j.ID}\n\t}\n}",
    "FROM python:3.12-slim\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nCMD [\"uvicorn\", \"main:app\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\"]",
    "const limiter = new Map<string, number[]>();\nexport function allow(key: string, now = Date.now()): boolean {\n  const hits = (limiter.get(key) ?? []).filter((t) => now - t < 60_000);\n  if (hits.length >= 100) return false;\n  hits.push(now);\n  limiter.set(key, hits);\n  return true;\n}",
];

const LOG_SNIPPETS: &[&str] = &[
    "Traceback (most recent call last):\n  File \"/app/worker.py\", line 88, in run\n    conn = pool.getconn()\n  File \"/usr/local/lib/python3.12/site-packages/psycopg2/pool.py\", line 169, in getconn\n    raise PoolError(\"connection pool exhausted\")\npsycopg2.pool.PoolError: connection pool exhausted",
    "Warning  Unhealthy  2m (x14 over 9m)  kubelet  Liveness probe failed: Get \"http://10.42.0.17:8000/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)\nNormal   Killing    2m                 kubelet  Container api failed liveness probe, will be restarted",
    "Download: 38.2 Mbit/s\nUpload: 41.7 Mbit/s\nPing: 23 ms\nJitter: 41 ms\nPacket loss: 2.1%",
    "thread 'main' panicked at src/main.rs:42:37:\ncalled `Result::unwrap()` on an `Err` value: Os { code: 2, kind: NotFound, message: \"No such file or directory\" }\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
];

const PROSE_SNIPPETS: &[&str] = &[
    "In recent decades, the question of how cities should adapt to rising temperatures has become more and more important. Many aspects of urban life are affected, and there are a lot of things that policymakers could do. This essay will look at some of these things and discuss them.",
    "Dear Professor Miller, I am sorry to bother you, and I hope this email finds you well. I wanted to ask if it would maybe be possible to get an extension for the assignment, if that is not too much trouble, because I was sick last week.",
    "Day 1: arrive in the afternoon, check in, walk around the old town. Day 2: museum in the morning, food market for lunch, viewpoint at sunset. Day 3: day trip by train to the coast, back in the evening.",
    "The results show that the reaction rate increased with temperature, as expected. However, at the highest temperature the rate was lower than predicted, which could be because of measurement errors or because the enzyme started to denature.",
];

const SQL_SNIPPETS: &[&str] = &[
    "SELECT c.country, sum(oi.quantity * oi.unit_price) AS revenue\nFROM orders o, order_items oi, customers c\nWHERE o.order_id = oi.order_id AND o.customer_id = c.customer_id\nGROUP BY c.country\nORDER BY revenue DESC;",
    "WITH order_revenue AS (\n  SELECT o.order_id, o.customer_id, date_trunc('month', o.order_date) AS month,\n         sum(oi.quantity * oi.unit_price * (1 - oi.discount)) AS revenue\n  FROM orders o\n  JOIN order_items oi USING (order_id)\n  WHERE o.status NOT IN ('cancelled', 'returned')\n  GROUP BY 1, 2, 3\n)\nSELECT month, sum(revenue) AS revenue, count(DISTINCT customer_id) AS customers\nFROM order_revenue\nGROUP BY month\nORDER BY month;",
    "SELECT s.region, p.category, count(*) AS stockout_days\nFROM inventory i\nJOIN stores s USING (store_id)\nJOIN products p USING (product_id)\nWHERE i.on_hand = 0 AND i.snapshot_date >= current_date - 90\nGROUP BY s.region, p.category\nORDER BY stockout_days DESC\nLIMIT 20;",
];

fn fill(rng: &mut SplitMix64, template: &str, p: &Persona, topic: &str) -> String {
    let mut s = template.replace("{t}", topic);
    while s.contains("{x}") {
        let d = *rng.pick(p.details);
        s = s.replacen("{x}", d, 1);
    }
    while s.contains("{s}") {
        let step = *rng.pick(p.steps);
        s = s.replacen("{s}", step, 1);
    }
    s
}

/// `fill` with a template picked from `templates`, avoiding the ones in `used` (a message does
/// not repeat a sentence while it has others left) and, unless `lead_in`, the ones that end with
/// a colon (those introduce pasted material).
fn fill_from(
    rng: &mut SplitMix64,
    templates: &[&'static str],
    used: &mut Vec<&'static str>,
    lead_in: bool,
    p: &Persona,
    topic: &str,
) -> String {
    let fits = |t: &&str| t.ends_with(':') == lead_in;
    let fresh: Vec<&'static str> = templates
        .iter()
        .copied()
        .filter(|t| fits(t) && !used.contains(t))
        .collect();
    let t = if fresh.is_empty() {
        // all used: start over (long answers cycle through the vocabulary)
        used.retain(|t| !templates.contains(t));
        let any: Vec<&'static str> = templates.iter().copied().filter(fits).collect();
        if any.is_empty() {
            "Here it is:"
        } else {
            *rng.pick(&any)
        }
    } else {
        *rng.pick(&fresh)
    };
    used.push(t);
    fill(rng, t, p, topic)
}

fn snippet(rng: &mut SplitMix64, kind: Paste) -> (&'static str, &'static str) {
    match kind {
        Paste::Code => {
            let c = *rng.pick(CODE_SNIPPETS);
            let lang = if c.starts_with("fn ") {
                "rust"
            } else if c.starts_with("func ") {
                "go"
            } else if c.starts_with("FROM ") {
                "dockerfile"
            } else if c.starts_with("const ") {
                "typescript"
            } else {
                "python"
            };
            (c, lang)
        }
        Paste::Log => (*rng.pick(LOG_SNIPPETS), "text"),
        Paste::Prose => (*rng.pick(PROSE_SNIPPETS), ""),
        Paste::Sql => (*rng.pick(SQL_SNIPPETS), "sql"),
    }
}

fn target_chars(rng: &mut SplitMix64, median_tokens: f64, sigma: f64, lo: f64, hi: f64) -> usize {
    (rng.lognormal(median_tokens, sigma).clamp(lo, hi) * CHARS_PER_TOKEN) as usize
}

/// A user message and how many of its characters were pasted (not typed).
fn user_message(rng: &mut SplitMix64, p: &Persona, topic: &str, first: bool) -> (String, usize) {
    let target = target_chars(rng, 55.0, 0.8, 20.0, 300.0);
    let mut used = Vec::new();
    let mut s = if first {
        fill_from(rng, p.asks, &mut used, false, p, topic)
    } else {
        let other = *rng.pick(p.topics);
        fill_from(rng, FOLLOW_UPS, &mut used, false, p, other)
    };
    let mut pasted = 0;
    if target > 400 && rng.chance(0.6) {
        let (snip, lang) = snippet(rng, p.paste);
        let lead = fill_from(rng, p.context, &mut used, true, p, topic);
        s.push(' ');
        s.push_str(&lead);
        if lang.is_empty() {
            s.push_str(&format!("\n\n{snip}"));
        } else {
            s.push_str(&format!("\n\n```{lang}\n{snip}\n```"));
        }
        pasted = snip.len();
    }
    let mut guard = 0;
    while s.len() < target && guard < 12 {
        let c = fill_from(rng, p.context, &mut used, false, p, topic);
        s.push_str(if pasted > 0 && guard == 0 {
            "\n\n"
        } else {
            " "
        });
        s.push_str(&c);
        guard += 1;
    }
    (s, pasted)
}

fn answer(rng: &mut SplitMix64, p: &Persona, topic: &str) -> String {
    let target = target_chars(rng, 250.0, 0.6, 50.0, 800.0);
    let mut s = String::with_capacity(target + 200);
    let mut used = Vec::new();
    let (mut listed, mut pasted) = (false, false);
    s.push_str(&rng.pick(OPENERS).replace("{t}", topic));
    s.push_str("\n\n");
    let mut paragraph = 0;
    while s.len() + 40 < target {
        let kind = if paragraph == 0 { 0 } else { rng.range(0, 5) };
        if kind == 3 && !listed {
            // a numbered list of distinct steps
            listed = true;
            let mut steps: Vec<&str> = p.steps.to_vec();
            let n = rng.range(3, 5).min(steps.len());
            s.push_str(&rng.pick(LIST_LEADS).replace("{t}", topic));
            for i in 0..n {
                let step = steps.swap_remove(rng.range(0, steps.len() - 1));
                s.push_str(&format!("\n{}. {step}", i + 1));
            }
        } else if kind == 4 && !pasted {
            pasted = true;
            let (snip, lang) = snippet(rng, p.paste);
            if lang.is_empty() {
                s.push_str(&format!("For example:\n\n> {}", snip.replace('\n', "\n> ")));
            } else {
                s.push_str(&format!(
                    "{}\n\n```{lang}\n{snip}\n```",
                    rng.pick(CODE_LEADS)
                ));
            }
        } else {
            let n = rng.range(2, 4);
            for i in 0..n {
                if i > 0 {
                    s.push(' ');
                }
                let t = fill_from(rng, p.explain, &mut used, false, p, topic);
                if i > 0 && rng.chance(0.3) {
                    let connector = *rng.pick(CONNECTORS);
                    s.push_str(connector);
                    s.push(' ');
                    s.push_str(&lower_first(&t));
                } else {
                    s.push_str(&t);
                }
            }
        }
        s.push_str("\n\n");
        paragraph += 1;
    }
    let closer = *rng.pick(CLOSERS);
    s.push_str(closer);
    s
}

/// Write `conversations` synthetic conversations as CSV (header
/// `conversation_id,timestamp,system_prompt,user_message,assistant_response`).
pub fn write_demo_csv<W: Write>(
    conversations: usize,
    seed: u64,
    out: W,
) -> std::io::Result<DemoStats> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "conversation_id",
        "timestamp",
        "system_prompt",
        "user_message",
        "assistant_response",
    ])?;
    let weights: Vec<f64> = PERSONAS.iter().map(|p| p.weight).collect();
    let turn_weights: Vec<f64> = (0..10).map(|n| 0.75f64.powi(n)).collect();
    let mut arrivals = SplitMix64::derive(seed, u64::MAX, 0xDE30);
    let mut start_ns = default_start_unix_ns();
    let mut stats = DemoStats::default();
    for c in 0..conversations {
        if c > 0 {
            start_ns += (arrivals.exponential(1.0 / 20.0) * 1e9) as i64;
        }
        let mut rng = SplitMix64::derive(seed, c as u64, 0xDE31);
        let p = &PERSONAS[rng.weighted(&weights)];
        let system = if rng.chance(0.08) { "" } else { p.system };
        let turns = 1 + rng.weighted(&turn_weights);
        let topic = *rng.pick(p.topics);
        let id = format!("{}-{:05}", p.name, c + 1);
        let mut t = start_ns;
        for k in 0..turns {
            let (user, pasted) = user_message(&mut rng, p, topic, k == 0);
            if k > 0 {
                // writing this message: typed text at 4-10 chars/s, pasted text 20x faster
                let typed = (user.len() - pasted) as f64 + pasted as f64 / 20.0;
                t += (typed / (4.0 + 6.0 * rng.uniform()) * 1e9) as i64;
            }
            let answer = answer(&mut rng, p, topic);
            w.write_record([
                id.as_str(),
                &format_datetime_ms(t),
                if k == 0 { system } else { "" },
                &user,
                &answer,
            ])?;
            stats.turns += 1;
            // the original server's response, reading it, and a pause before typing again
            let answer_tokens = answer.len() as f64 / CHARS_PER_TOKEN;
            let response =
                answer_tokens / (40.0 + 50.0 * rng.uniform()) + 0.2 + 0.8 * rng.uniform();
            let reading = answer_tokens * (0.03 + 0.09 * rng.uniform());
            let pause = if rng.chance(0.05) {
                rng.lognormal(300.0, 1.0)
            } else {
                rng.lognormal(4.0, 0.8)
            };
            t += ((response + reading + pause) * 1e9) as i64;
        }
        stats.conversations += 1;
    }
    w.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_input::{parse_csv, ColumnNames};
    use std::path::Path;

    #[test]
    fn seeded_output_is_reproducible_and_reads_back() {
        let mut a = Vec::new();
        let stats = write_demo_csv(40, 7, &mut a).unwrap();
        let mut b = Vec::new();
        write_demo_csv(40, 7, &mut b).unwrap();
        assert_eq!(a, b, "same seed, same bytes");
        let mut c = Vec::new();
        write_demo_csv(40, 8, &mut c).unwrap();
        assert_ne!(a, c);
        let set = parse_csv(Path::new("demo.csv"), &a, &ColumnNames::default()).unwrap();
        assert_eq!(set.conversations.len(), 40);
        assert_eq!(set.turns(), stats.turns);
        assert!(set.has_timestamps);
        assert!(set
            .conversations
            .iter()
            .all(|c| (1..=10).contains(&c.turns.len())));
        let systems: std::collections::HashSet<_> = set
            .conversations
            .iter()
            .filter_map(|c| c.system.as_deref())
            .collect();
        assert!(systems.len() >= 4, "several shared system prompts");
    }

    #[test]
    fn lengths_are_in_the_documented_ranges() {
        let mut out = Vec::new();
        write_demo_csv(200, 1, &mut out).unwrap();
        let set = parse_csv(Path::new("demo.csv"), &out, &ColumnNames::default()).unwrap();
        let tokens = |s: &str| s.len() as f64 / CHARS_PER_TOKEN;
        let mut users: Vec<f64> = Vec::new();
        let mut answers: Vec<f64> = Vec::new();
        for c in &set.conversations {
            for t in &c.turns {
                users.push(tokens(&t.user));
                answers.push(tokens(&t.assistant));
            }
        }
        users.sort_by(f64::total_cmp);
        answers.sort_by(f64::total_cmp);
        let med = |v: &[f64]| v[v.len() / 2];
        assert!(
            users[0] >= 5.0 && *users.last().unwrap() <= 420.0,
            "{:?}",
            (users[0], users.last())
        );
        assert!(
            (30.0..=120.0).contains(&med(&users)),
            "user median {}",
            med(&users)
        );
        assert!(
            answers[0] >= 30.0 && *answers.last().unwrap() <= 950.0,
            "{:?}",
            (answers[0], answers.last())
        );
        assert!(
            (150.0..=400.0).contains(&med(&answers)),
            "answer median {}",
            med(&answers)
        );
    }
}
