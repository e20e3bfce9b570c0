"""Writes tickets.parquet and tickets.csv beside this script: 300 customer support tickets
for the text features (tokenization, pooled embeddings, the ticket classifier that
make_classifier.py builds). Deterministic: the same seed gives the same rows.

Columns: ticket_id int64 (unique, ascending), text utf8, label utf8 (billing, shipping or
technical). The texts come from per-label phrase banks, so the label can be learnt from the
text. Among them: 3 null texts, 2 empty texts "", 4 long texts (over 200 words, far beyond
128 tokens), texts with accents, CJK and emoji, and lengths mostly from 3 to 60 words.

    python sample_data/text/make_texts.py   (needs pyarrow)
"""

import os
import random

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEED = 20240611
N = 300
HERE = os.path.dirname(os.path.abspath(__file__))

OPENERS = ["Hi,", "Hello,", "Hi team,", "Good morning,", "Hey,", "Dear support,", "Hello there,", ""]
CLOSERS = ["Thanks.", "Thank you!", "Please help.", "Any update would be appreciated.",
           "Regards, Sam", "Cheers", "Please advise as soon as possible.", "This is urgent.", ""]

BANKS = {
    "billing": {
        "short": ["refund still missing", "charged twice this month", "wrong amount on invoice",
                  "cancel my subscription please", "promo code not applied", "need a VAT invoice",
                  "card declined at checkout", "why was I billed again?"],
        "issue": ["I was charged twice for my {plan} subscription",
                  "my invoice for {month} shows the wrong amount",
                  "the refund you promised on {month} {day} has not reached my card",
                  "my credit card was billed {amount} even though I cancelled",
                  "the promo code {code} was not applied to my order total",
                  "I need a corrected invoice with our VAT number for accounting",
                  "the payment failed but the money left my bank account anyway",
                  "I upgraded to the {plan} plan and the proration looks wrong",
                  "there is an unknown charge of {amount} on my statement",
                  "I want to switch from monthly to annual billing"],
        "detail": ["The transaction reference is {ref}.", "My account email is on file.",
                   "I paid with a Visa ending in {last4}.", "Please send me a receipt for the refund.",
                   "Our finance team needs this before the end of the quarter.",
                   "The charge appeared on {month} {day}.", "I would like the extra {amount} refunded.",
                   "The billing page still shows the old price.", "Can you explain the fees on the last invoice?"],
    },
    "shipping": {
        "short": ["where is my package?", "parcel never arrived", "tracking not updating",
                  "box arrived damaged", "wrong item delivered", "delivery is late again",
                  "change my delivery address", "order stuck in customs"],
        "issue": ["my order {order} has not arrived yet",
                  "the tracking number {ref} has not updated for {days} days",
                  "the courier left my parcel at the wrong address",
                  "the package arrived with a crushed box and a broken item",
                  "I received someone else's order instead of mine",
                  "my delivery was scheduled for {month} {day} and nobody came",
                  "the shipment is stuck in customs at the border",
                  "I need to change the delivery address before it ships",
                  "only two of the three items in order {order} were in the box",
                  "the courier says the parcel was delivered but I never got it"],
        "detail": ["The tracking page says it is still at the warehouse.",
                   "I paid for express shipping.", "Nobody rang the doorbell.",
                   "The driver did not ask for a signature.", "It has been {days} days since dispatch.",
                   "I am travelling after {month} {day}, so please hurry.",
                   "Can you send a replacement or a return label?",
                   "The box was left in the rain.", "My order number is {order}."],
    },
    "technical": {
        "short": ["app keeps crashing", "cannot log in", "password reset email never comes",
                  "sync is broken", "error 500 on dashboard", "update broke the app",
                  "two factor code rejected", "API returns timeout"],
        "issue": ["the app crashes every time I open the settings screen",
                  "I cannot log in, it says my password is invalid after the reset",
                  "the dashboard shows error 500 since the update to version {version}",
                  "my files stopped syncing between the laptop and the phone",
                  "the API returns a timeout for every request to the export endpoint",
                  "the two factor code is always rejected even though the clock is right",
                  "the device will not pair over bluetooth after the firmware update",
                  "the page is blank in {browser} but works in other browsers",
                  "notifications stopped working on my phone after version {version}",
                  "the export to CSV produces an empty file"],
        "detail": ["I already tried reinstalling the app.", "I cleared the cache and cookies.",
                   "It happens on both Wi-Fi and mobile data.", "The error code is {code}.",
                   "I am using {browser} on a recent laptop.", "Restarting the device did not help.",
                   "The logs show a null pointer exception.", "It started after version {version}.",
                   "Other people on my team see the same bug."],
    },
}

# Tickets written partly or wholly outside ASCII: accents, CJK, emoji.
UNICODE = [
    ("billing", "Bonjour, ma facture de décembre est erronée, j'ai été débité deux fois. Merci!"),
    ("billing", "Hola, me cobraron dos veces la suscripción, ¿pueden devolverme el dinero?"),
    ("billing", "我被重复扣款了，请退款。 charged twice, refund please"),
    ("billing", "Refund still not on my card 😡 it has been three weeks"),
    ("shipping", "Grüße, mein Paket ist noch nicht angekommen, die Sendungsverfolgung zeigt nichts."),
    ("shipping", "我的包裹还没有到达，快递单号没有更新。 package not delivered"),
    ("shipping", "📦 arrived crushed, the vase inside is broken 😢 please send a replacement"),
    ("shipping", "Olá, a entrega atrasou e o pacote está parado na alfândega."),
    ("technical", "アプリが起動しません。 the app will not start after the update"),
    ("technical", "Impossible de me connecter, le code de vérification est refusé à chaque fois."),
    ("technical", "Login fails with error 500 🙏 please fix, café menu also crashes"),
    ("technical", "앱이 계속 충돌합니다. app keeps crashing on my phone"),
]


def fill(rng, s):
    return s.format(
        plan=rng.choice(["Basic", "Pro", "Team", "Family", "Premium"]),
        month=rng.choice(["January", "March", "May", "July", "September", "November"]),
        day=rng.randint(1, 28), amount=f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        code=rng.choice(["SPRING20", "WELCOME10", "FREESHIP", "VIP15"]),
        ref=f"{rng.choice('ABCDEFGHJK')}{rng.randint(10000000, 99999999)}",
        last4=rng.randint(1000, 9999), order=f"#{rng.randint(100000, 999999)}",
        days=rng.randint(3, 21), version=f"{rng.randint(2, 5)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        browser=rng.choice(["Firefox", "Chrome", "Safari", "Edge"]),
    )


def sentence(s):
    return s[0].upper() + s[1:] + "."


def ticket(rng, label, kind):
    bank = BANKS[label]
    if kind == "short":  # 3 to 6 words
        return rng.choice(bank["short"])
    opener, issue = rng.choice(OPENERS), sentence(fill(rng, rng.choice(bank["issue"])))
    if opener.endswith(",") and not issue.startswith("I "):
        issue = issue[0].lower() + issue[1:]  # "Hi team, the courier ..."
    parts = [opener, issue]
    n_details = {"medium": rng.randint(0, 2), "long": 40}[kind]
    details = [fill(rng, d) for d in rng.sample(bank["detail"], min(n_details, len(bank["detail"])))]
    if kind == "long":  # over 200 words: the whole story, several times over
        story = []
        while len(" ".join(story).split()) < 220:
            story.append(sentence(fill(rng, rng.choice(bank["issue"]))))
            story.extend(fill(rng, d) for d in rng.sample(bank["detail"], 3))
        details = story
    parts += details + [rng.choice(CLOSERS)]
    return " ".join(p for p in parts if p)


def main():
    rng = random.Random(SEED)
    labels = [("billing", "shipping", "technical")[i % 3] for i in range(N)]
    kinds = ["short"] * 60 + ["medium"] * (N - 60)
    rng.shuffle(labels)
    rng.shuffle(kinds)
    texts = [ticket(rng, label, kind) for label, kind in zip(labels, kinds)]
    # Special rows at fixed, spread-out positions: long, non-ASCII, empty, null.
    positions = rng.sample(range(N), 4 + len(UNICODE) + 2 + 3)
    for i in positions[:4]:
        texts[i] = ticket(rng, labels[i], "long")
    for i, (label, text) in zip(positions[4:4 + len(UNICODE)], UNICODE):
        labels[i], texts[i] = label, text
    for i in positions[4 + len(UNICODE):4 + len(UNICODE) + 2]:
        texts[i] = ""
    for i in positions[-3:]:
        texts[i] = None
    ids = sorted(rng.sample(range(10_000, 100_000), N))
    table = pa.table({
        "ticket_id": pa.array(ids, pa.int64()),
        "text": pa.array(texts, pa.string()),
        "label": pa.array(labels, pa.string()),
    })
    pq.write_table(table, os.path.join(HERE, "tickets.parquet"), compression="snappy")
    # CSV cannot tell a null text from an empty one: both are written as an empty field (the
    # empty string quoted, null bare, but readers, pyarrow's included, usually read both as
    # the same). Tests that tell null from "" apart read tickets.parquet.
    pacsv.write_csv(table, os.path.join(HERE, "tickets.csv"))
    words = [len(t.split()) for t in texts if t]
    print(f"{N} tickets, {sum(t is None for t in texts)} null, {sum(t == '' for t in texts)} empty, "
          f"{sum(w > 200 for w in words)} over 200 words, words per text {min(words)}..{max(words)}")


if __name__ == "__main__":
    main()
