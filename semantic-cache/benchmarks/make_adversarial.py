"""Writes benchmarks/data/adversarial.jsonl from the hand-written items below (deterministic).

Each item: a base prompt, paraphrases that deserve the same answer (label true), and near
misses that do not (label false), each tagged with what changed. Scope-change pairs reuse a
base prompt verbatim under another tenant, model, prompt version or system prompt. Several near
misses use wording the verifier's word lists do not contain (turn on/off, role swaps, antonyms
outside the list), so the set measures the whole system, not the lists.
"""

from __future__ import annotations

import json
from pathlib import Path

# (base, [paraphrases], [(near miss, kind)])
ITEMS: list[tuple[str, list[str], list[tuple[str, str]]]] = [
    (
        "How do I reset my password?",
        ["How can I reset my password", "What's the way to reset my password?"],
        [("How do I change my username?", "topic"), ("Why can't I reset my password?", "negation")],
    ),
    (
        "How do I enable two-factor authentication?",
        [
            "How can I turn on two-factor authentication?",
            "Steps to enable two-factor authentication",
        ],
        [
            ("How do I disable two-factor authentication?", "polarity"),
            ("How do I enable two-factor authentication for all users?", "quantity"),
        ],
    ),
    (
        "What is the capital of France?",
        ["What's the capital city of France?", "Which city is the capital of France?"],
        [
            ("What is the capital of Germany?", "entity"),
            ("What is the capital of Spain?", "entity"),
        ],
    ),
    (
        "Convert 5 miles to kilometers",
        ["How many kilometers are 5 miles?", "5 miles in kilometers"],
        [
            ("Convert 50 miles to kilometers", "number"),
            ("Convert 5 kilometers to miles", "role_swap"),
        ],
    ),
    (
        "What is the refund policy for orders over $100?",
        ["What's your refund policy for orders above $100?", "Refund policy on orders over $100?"],
        [
            ("What is the refund policy for orders over $500?", "number"),
            ("What is the refund policy for orders under $100?", "polarity"),
        ],
    ),
    (
        "Is the store open on Sunday?",
        ["Are you open on Sundays?", "Does the store open on Sunday?"],
        [("Is the store open on Monday?", "date"), ("Is the store closed on Sunday?", "polarity")],
    ),
    (
        "How do I add a user to the admin group?",
        ["How can I add a user to the admin group?", "Adding a user to the admin group: how?"],
        [
            ("How do I remove a user from the admin group?", "polarity"),
            ("How do I add a user to the billing group?", "topic"),
        ],
    ),
    (
        "Book a flight from Boston to Denver on March 3",
        [
            "I need a flight from Boston to Denver on March 3",
            "Find me a Boston to Denver flight for March 3",
        ],
        [
            ("Book a flight from Denver to Boston on March 3", "role_swap"),
            ("Book a flight from Boston to Denver on March 4", "date"),
            ("Book a flight from Boston to Chicago on March 3", "entity"),
        ],
    ),
    (
        "Should I take ibuprofen with food?",
        ["Do I need to take ibuprofen with food?", "Is it better to take ibuprofen with food?"],
        [
            ("Should I take ibuprofen without food?", "negation"),
            ("Should I take aspirin with food?", "topic"),
        ],
    ),
    (
        "What time does the meeting start tomorrow?",
        ["When does tomorrow's meeting start?", "What time is the meeting tomorrow?"],
        [
            ("What time does the meeting start today?", "date"),
            ("What time does the meeting end tomorrow?", "polarity"),
        ],
    ),
    (
        "Can I cancel my subscription at any time?",
        [
            "Am I able to cancel my subscription at any time?",
            "Is it possible to cancel my subscription anytime?",
        ],
        [
            ("Can I not cancel my subscription at any time?", "negation"),
            ("Can I pause my subscription at any time?", "topic"),
        ],
    ),
    (
        "How much does the premium plan cost per month?",
        ["What is the monthly price of the premium plan?", "Premium plan monthly cost?"],
        [
            ("How much does the basic plan cost per month?", "topic"),
            ("How much does the premium plan cost per year?", "date"),
        ],
    ),
    (
        "Increase the upload limit to 10 MB",
        ["Raise the upload limit to 10 MB", "Set a higher upload limit of 10 MB"],
        [
            ("Decrease the upload limit to 10 MB", "polarity"),
            ("Increase the upload limit to 100 MB", "number"),
        ],
    ),
    (
        "Does Python support multiple inheritance?",
        [
            "Is multiple inheritance supported in Python?",
            "Can Python classes use multiple inheritance?",
        ],
        [
            ("Does Java support multiple inheritance?", "entity"),
            ("Does Python support single inheritance only?", "quantity"),
        ],
    ),
    (
        "What are the side effects of metformin?",
        ["What side effects does metformin have?", "Metformin side effects?"],
        [
            ("What are the side effects of insulin?", "entity"),
            ("What are the benefits of metformin?", "topic"),
        ],
    ),
    (
        "Who wrote Pride and Prejudice?",
        ["Who is the author of Pride and Prejudice?", "Pride and Prejudice was written by whom?"],
        [
            ("Who wrote Sense and Sensibility?", "entity"),
            ("Who published Pride and Prejudice?", "topic"),
        ],
    ),
    (
        "Allow guests to view the dashboard",
        ["Let guests see the dashboard", "Give guests permission to view the dashboard"],
        [
            ("Deny guests access to the dashboard", "polarity"),
            ("Allow guests to edit the dashboard", "topic"),
        ],
    ),
    (
        "Are all employees eligible for the bonus?",
        ["Is every employee eligible for the bonus?", "Do all employees qualify for the bonus?"],
        [
            ("Are some employees eligible for the bonus?", "quantity"),
            ("Are no employees eligible for the bonus?", "quantity"),
        ],
    ),
    (
        "How many days of vacation do new hires get?",
        ["How much vacation do new hires get in days?", "Vacation days for new hires?"],
        [
            ("How many sick days do new hires get?", "topic"),
            ("How many days of vacation do managers get?", "topic"),
        ],
    ),
    (
        "What was Apple's revenue in 2022?",
        ["How much revenue did Apple make in 2022?", "Apple revenue for 2022?"],
        [
            ("What was Apple's revenue in 2023?", "number"),
            ("What was Microsoft's revenue in 2022?", "entity"),
        ],
    ),
    (
        "Turn on dark mode in the app",
        ["Enable dark mode in the app", "Switch the app to dark mode"],
        [
            ("Turn off dark mode in the app", "polarity"),
            ("Turn on dark mode in the browser", "topic"),
        ],
    ),
    (
        "Is it safe to eat raw eggs?",
        ["Can I safely eat raw eggs?", "Are raw eggs safe to eat?"],
        [
            ("Is it unsafe to eat raw eggs?", "polarity"),
            ("Is it safe to eat raw chicken?", "topic"),
        ],
    ),
    (
        "Ship the order to London by Friday",
        ["Deliver the order to London by Friday", "Get the order to London by Friday"],
        [
            ("Ship the order to Paris by Friday", "entity"),
            ("Ship the order to London by Monday", "date"),
        ],
    ),
    (
        "How do I install Docker on Ubuntu?",
        ["How can I install Docker on Ubuntu?", "Installing Docker on Ubuntu: steps?"],
        [
            ("How do I uninstall Docker on Ubuntu?", "polarity"),
            ("How do I install Docker on Windows?", "entity"),
        ],
    ),
    (
        "Summarize the quarterly report in three bullet points",
        [
            "Give me a three bullet point summary of the quarterly report",
            "Summarise the quarterly report in three bullets",
        ],
        [
            ("Summarize the quarterly report in five bullet points", "number"),
            ("Summarize the annual report in three bullet points", "topic"),
        ],
    ),
    (
        "What is the boiling point of water at sea level?",
        [
            "At sea level, what temperature does water boil at?",
            "Boiling point of water at sea level?",
        ],
        [
            ("What is the freezing point of water at sea level?", "topic"),
            ("What is the boiling point of water on Everest?", "entity"),
        ],
    ),
    (
        "Alice sent money to Bob",
        ["Alice transferred money to Bob", "Money was sent by Alice to Bob"],
        [("Bob sent money to Alice", "role_swap"), ("Alice sent money to Carol", "entity")],
    ),
    (
        "Does the hotel allow pets?",
        ["Are pets allowed at the hotel?", "Can I bring my pet to the hotel?"],
        [
            ("Does the hotel not allow pets?", "negation"),
            ("Does the hotel allow smoking?", "topic"),
        ],
    ),
    (
        "What is the deadline for the tax return in 2024?",
        ["When is the 2024 tax return due?", "Tax return deadline 2024?"],
        [
            ("What is the deadline for the tax return in 2025?", "number"),
            ("What is the penalty for the tax return in 2024?", "topic"),
        ],
    ),
    (
        "How do I export my contacts to CSV?",
        ["How can I export contacts as a CSV file?", "Export my contacts to CSV: how?"],
        [
            ("How do I import my contacts from CSV?", "polarity"),
            ("How do I export my calendar to CSV?", "topic"),
        ],
    ),
    (
        "Is the vaccine recommended for children?",
        ["Do doctors recommend the vaccine for children?", "Should children get the vaccine?"],
        [
            ("Is the vaccine recommended for adults?", "topic"),
            ("Is the vaccine not recommended for children?", "negation"),
        ],
    ),
    (
        "List three benefits of regular exercise",
        [
            "Name three benefits of exercising regularly",
            "Give three advantages of regular exercise",
        ],
        [
            ("List three risks of regular exercise", "polarity"),
            ("List ten benefits of regular exercise", "number"),
        ],
    ),
    (
        "Can I use the API without an API key?",
        [
            "Is it possible to call the API without an API key?",
            "Does the API work without an API key?",
        ],
        [
            ("Can I use the API with an API key?", "negation"),
            ("Can I use the dashboard without an API key?", "topic"),
        ],
    ),
    (
        "What is the maximum file size for uploads?",
        ["What's the largest file I can upload?", "Max upload file size?"],
        [
            ("What is the minimum file size for uploads?", "polarity"),
            ("What is the maximum file size for attachments in email?", "topic"),
        ],
    ),
    (
        "Lock the front door at 10 pm",
        ["Lock the front door at 10 in the evening", "At 10 pm, lock the front door"],
        [
            ("Unlock the front door at 10 pm", "polarity"),
            ("Lock the front door at 11 pm", "number"),
        ],
    ),
    (
        "How long should I boil an egg for a soft yolk?",
        ["How many minutes to boil an egg with a soft yolk?", "Boiling time for a soft-yolk egg?"],
        [
            ("How long should I boil an egg for a hard yolk?", "polarity"),
            ("How long should I fry an egg for a soft yolk?", "topic"),
        ],
    ),
    (
        "Who won the World Cup in 2018?",
        ["Which country won the 2018 World Cup?", "2018 World Cup winner?"],
        [
            ("Who won the World Cup in 2014?", "number"),
            ("Who lost the World Cup final in 2018?", "polarity"),
        ],
    ),
    (
        "Translate 'good morning' into Spanish",
        ["How do you say 'good morning' in Spanish?", "'Good morning' in Spanish?"],
        [
            ("Translate 'good morning' into French", "entity"),
            ("Translate 'good night' into Spanish", "topic"),
        ],
    ),
    (
        "What are the store hours on weekends?",
        ["When is the store open on weekends?", "Weekend store hours?"],
        [
            ("What are the store hours on weekdays?", "date"),
            ("What are the pharmacy hours on weekends?", "topic"),
        ],
    ),
    (
        "Why is my laptop battery draining fast?",
        ["Why does my laptop battery drain so quickly?", "My laptop battery drains fast, why?"],
        [
            ("Why is my laptop battery not charging?", "negation"),
            ("Why is my phone battery draining fast?", "topic"),
        ],
    ),
    (
        "Send the invoice to the client before the end of the month",
        [
            "Email the invoice to the client before month end",
            "Get the invoice to the client before the month ends",
        ],
        [
            ("Send the invoice to the client after the end of the month", "polarity"),
            ("Send the contract to the client before the end of the month", "topic"),
        ],
    ),
    (
        "Most users prefer the new interface",
        [
            "The majority of users prefer the new interface",
            "Most of our users like the new interface better",
        ],
        [
            ("Few users prefer the new interface", "quantity"),
            ("Most users prefer the old interface", "polarity"),
        ],
    ),
    (
        "How do I connect to the VPN from home?",
        [
            "How can I connect to the VPN when working from home?",
            "Connecting to the VPN from home: how?",
        ],
        [
            ("How do I disconnect from the VPN at home?", "polarity"),
            ("How do I connect to the printer from home?", "topic"),
        ],
    ),
    (
        "Does the warranty cover water damage?",
        ["Is water damage covered by the warranty?", "Will the warranty pay for water damage?"],
        [
            ("Does the warranty cover screen damage?", "topic"),
            ("Does the warranty exclude water damage?", "polarity"),
        ],
    ),
    (
        "Schedule a call with Maria on Tuesday at 3 pm",
        ["Set up a call with Maria for Tuesday at 3 pm", "Book a Tuesday 3 pm call with Maria"],
        [
            ("Schedule a call with Maria on Thursday at 3 pm", "date"),
            ("Schedule a call with John on Tuesday at 3 pm", "entity"),
            ("Schedule a call with Maria on Tuesday at 4 pm", "number"),
        ],
    ),
    (
        "What is the interest rate on a 30-year mortgage?",
        ["What's the 30-year mortgage interest rate?", "Interest rate for a 30 year mortgage?"],
        [
            ("What is the interest rate on a 15-year mortgage?", "number"),
            ("What is the interest rate on a car loan?", "topic"),
        ],
    ),
    (
        "Is Tokyo bigger than New York?",
        ["Is Tokyo larger than New York?", "Does Tokyo have more area than New York?"],
        [
            ("Is Tokyo smaller than New York?", "polarity"),
            ("Is New York bigger than Tokyo?", "role_swap"),
        ],
    ),
    (
        "Show me hotels in Rome under 150 euros",
        ["Find hotels in Rome for less than 150 euros", "Rome hotels below 150 euros"],
        [
            ("Show me hotels in Rome over 150 euros", "polarity"),
            ("Show me hotels in Milan under 150 euros", "entity"),
        ],
    ),
    (
        "How do I stop the server gracefully?",
        ["How can I shut down the server gracefully?", "Gracefully stopping the server: how?"],
        [
            ("How do I start the server gracefully?", "polarity"),
            ("How do I stop the server immediately?", "topic"),
        ],
    ),
    (
        "Can pregnant women drink coffee?",
        ["Is coffee safe for pregnant women?", "Should pregnant women drink coffee?"],
        [
            ("Can pregnant women drink alcohol?", "topic"),
            ("Can pregnant women never drink coffee?", "negation"),
        ],
    ),
    (
        "What is the population of Canada?",
        ["How many people live in Canada?", "Canada's population?"],
        [
            ("What is the population of Australia?", "entity"),
            ("What was the population of Canada in 1900?", "number"),
        ],
    ),
    (
        "Approve the expense report from the sales team",
        [
            "Sign off on the sales team's expense report",
            "Give approval to the sales team's expense report",
        ],
        [
            ("Reject the expense report from the sales team", "polarity"),
            ("Approve the expense report from the marketing team", "topic"),
        ],
    ),
    (
        "How many calories are in a banana?",
        ["How many calories does a banana have?", "Calories in one banana?"],
        [
            ("How many calories are in two bananas?", "number"),
            ("How many calories are in an apple?", "topic"),
        ],
    ),
    (
        "Does the train to Oxford leave every hour?",
        ["Is there an hourly train to Oxford?", "Do trains to Oxford run every hour?"],
        [
            ("Does the train to Cambridge leave every hour?", "entity"),
            ("Does the train to Oxford leave every two hours?", "number"),
        ],
    ),
    (
        "Write a polite email declining the invitation",
        [
            "Draft a courteous email to decline the invitation",
            "Compose a polite email turning down the invitation",
        ],
        [
            ("Write a polite email accepting the invitation", "polarity"),
            ("Write a rude email declining the invitation", "polarity"),
        ],
    ),
    (
        "Is the bridge open to cyclists at night?",
        ["Can cyclists use the bridge at night?", "Are cyclists allowed on the bridge at night?"],
        [
            ("Is the bridge open to cyclists during the day?", "date"),
            ("Is the bridge open to trucks at night?", "topic"),
        ],
    ),
    (
        "What's the best way to learn Python quickly?",
        ["How can I learn Python fast?", "Fastest way to learn Python?"],
        [
            ("What's the best way to learn Rust quickly?", "entity"),
            ("What's the worst way to learn Python?", "polarity"),
        ],
    ),
    (
        "Remind me to call mom at 6 pm today",
        ["Set a reminder to call mom today at 6 pm", "At 6 pm today remind me to call mom"],
        [
            ("Remind me to call mom at 6 pm tomorrow", "date"),
            ("Remind me to call dad at 6 pm today", "topic"),
        ],
    ),
    (
        "Are refunds issued within 5 business days?",
        [
            "Do refunds arrive within 5 business days?",
            "Will I get my refund within 5 business days?",
        ],
        [
            ("Are refunds issued within 15 business days?", "number"),
            ("Are refunds never issued within 5 business days?", "negation"),
        ],
    ),
    (
        "How do I encrypt a file with GPG?",
        ["How can I encrypt a file using GPG?", "Encrypting a file with GPG: how?"],
        [
            ("How do I decrypt a file with GPG?", "polarity"),
            ("How do I sign a file with GPG?", "topic"),
        ],
    ),
]

SCOPE_CHANGES = [
    ({"tenant": "acme"}, {"tenant": "globex"}, "scope_tenant"),
    ({"tenant": "acme", "model": "smollm2"}, {"tenant": "acme", "model": "gpt-4o"}, "scope_model"),
    (
        {"tenant": "acme", "prompt_version": "v1"},
        {"tenant": "acme", "prompt_version": "v2"},
        "scope_version",
    ),
    (
        {"tenant": "acme", "system_hash": "support"},
        {"tenant": "acme", "system_hash": "pirate"},
        "scope_system",
    ),
]


def rows() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, (base, paraphrases, near_misses) in enumerate(ITEMS):
        for text in paraphrases:
            out.append({"a": base, "b": text, "label": True, "kind": "paraphrase"})
        for text, kind in near_misses:
            out.append({"a": base, "b": text, "label": False, "kind": kind})
        scope_a, scope_b, kind = SCOPE_CHANGES[i % len(SCOPE_CHANGES)]
        out.append(
            {
                "a": base,
                "b": base,
                "label": False,
                "kind": kind,
                "scope_a": scope_a,
                "scope_b": scope_b,
            }
        )
        # the same wording within one scope is an exact hit and the right answer
        if i % 3 == 0:
            out.append({"a": base, "b": base.lower().rstrip("?"), "label": True, "kind": "exact"})
    return out


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / "adversarial.jsonl"
    lines = rows()
    target.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    print(f"wrote {len(lines)} pairs to {target}")
