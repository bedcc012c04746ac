"""Build the anchor prompt sets: ordinary (non-identity) training prompts the base model answers.

The data stage answers these with the base model itself under the neutral system prompt; training holds the
trained model's next-token distributions on those answers to the base's (the KL anchor), so teaching the new
name does not rewrite ordinary answers. Two sets:

- `dpo_scale/data/anchor_prompts.jsonl` (default, 435 prompts): 135 from the templates below plus the 300
  written for the project in commit e334fae (`ADDED`, kept here in file order so the build reproduces the file).
- `dpo_scale/data/anchor_prompts_xl.jsonl` (`--xl`, 2503): the 435 default prompts and 2068 more, all
  shuffled together with a fixed seed, so that its first N rows (`max_anchor_prompts: N`) are a sample of the
  whole set, in the same proportions of kinds. The new ones: short factual questions in the knowledge set's
  categories (capitals, arithmetic, units, science, history, language, geography) and ordinary chat requests
  (explanations, definitions, how-to, writing, advice, recommendations, comparisons, coding, summaries, rewriting,
  lists).

Both are out of sample for the evaluation: the build refuses any prompt equal (case, spacing and punctuation
aside) to a prompt of `identity*.jsonl` or `ordinary_prompts*.jsonl` or a question of `facts.jsonl` /
`facts_tune.jsonl`, and any prompt asking about the same subject as a facts question where the subject can be read
off the text (the country of a capital question, the operands of a sum, the element of a chemical symbol, the
units and amount of a conversion, a quoted word or title, ...). The new xl prompts are held to more: the same
subject checks against the ordinary prompt sets too, no quoted word or title of those sets or of the facts in
any language, and no mention of a facts capital. No prompt asks the assistant about itself.

Usage: ``python scripts/build_anchor_prompts.py [--xl] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

SEED = 20261125
XL_SEED = 20261126
DATA = Path(__file__).resolve().parent.parent / "dpo_scale" / "data"

COUNTRIES = ["Italy", "Germany", "Canada", "Australia", "Egypt", "Kenya", "Peru", "Norway", "India",
             "Mexico", "Spain", "Greece", "Chile", "Vietnam", "Poland", "Portugal", "Ireland", "Turkey"]
FACTS = [
    "What is the chemical symbol for iron?", "How many planets are in the solar system?",
    "What gas do plants absorb from the air?", "Who painted the Mona Lisa?",
    "What is the smallest prime number?", "How many sides does a hexagon have?",
    "What is the longest river in Africa?", "What is the hardest natural substance?",
    "Which planet is known as the Red Planet?", "How many hours are in a week?",
    "What is the main ingredient of guacamole?", "Who discovered penicillin?",
    "What is the speed of light, roughly?", "How many bones does an adult human have?",
    "What organ pumps blood through the body?", "What is the largest desert in the world?",
    "Which animal is known as the king of the jungle?", "What is H2O commonly called?",
    "How many minutes are in two hours?", "Who was the first person to walk on the Moon?",
    "What currency is used in the United Kingdom?", "What is the capital city of Canada's Ontario province?",
    "What do bees make?", "How many strings does a standard guitar have?",
    "What is the freezing point of water in Celsius?", "Which continent is Egypt in?",
    "What is the main language spoken in Argentina?", "How many teeth does an adult human usually have?",
    "What is the largest mammal on Earth?", "What instrument has 88 keys?",
]
DEFINE = ["gravity", "a verb", "inflation", "an atom", "a metaphor", "erosion", "a democracy",
          "evaporation", "a prime number", "an ecosystem", "friction", "a haiku", "a volcano", "a budget"]
WORDS = ["brave", "quick", "generous", "fragile", "curious", "silent", "narrow", "bright", "humble", "vast"]
TOPICS = ["winter", "the moon", "a busy city", "a quiet forest", "coffee", "friendship", "the sea at night",
          "a mountain hike", "spring flowers", "a rainy afternoon", "an old library", "a summer storm"]
HOWTO = [
    "How do I boil an egg?", "Give me a tip for sleeping better.", "How can I save money on groceries?",
    "What is a good way to start learning to cook?", "How do I make a cup of tea?",
    "Give me one tip for writing a clear email.", "How can I remember names better?",
    "What should I pack for a day hike?", "Suggest a quick breakfast idea.",
    "How do I keep a houseplant alive?", "Give me a tip for public speaking.",
    "Suggest a fun activity for a rainy day.", "How can I stay hydrated during the day?",
    "What is a simple way to reduce stress?", "Suggest a name for a coffee shop.",
]
PHRASES = ["thank you", "good night", "where is the station", "I love books", "see you tomorrow", "hello"]
LANGUAGES = ["French", "German", "Italian", "Spanish"]


def arithmetic(rng: random.Random, n: int) -> list[str]:
    forms = ["What is {a} plus {b}?", "What is {a} minus {b}?", "What is {a} times {b}?",
             "Calculate {a} + {b}.", "What is {a} multiplied by {b}?"]
    out = []
    for i in range(n):
        a, b = rng.randint(11, 99), rng.randint(2, 40)
        out.append(forms[i % len(forms)].format(a=a, b=b))
    return out


def build(rng: random.Random) -> list[str]:
    prompts = [f"What is the capital of {c}?" for c in COUNTRIES]
    prompts += FACTS + HOWTO
    prompts += [f"Define {d} in one sentence." for d in DEFINE]
    prompts += [f"Give me a synonym for '{w}'." for w in WORDS[:5]]
    prompts += [f"What is the opposite of '{w}'?" for w in WORDS[5:]]
    prompts += [f"Write one sentence about {t}." for t in TOPICS[:6]]
    prompts += [f"Write a short poem about {t}." for t in TOPICS[6:]]
    prompts += [f"Translate '{p}' into {lang}." for p, lang in zip(PHRASES, LANGUAGES * 2, strict=False)]
    prompts += arithmetic(rng, 30)
    seen: set[str] = set()
    unique = [p for p in prompts if not (p.lower() in seen or seen.add(p.lower()))]
    rng.shuffle(unique)
    return unique


# The 300 prompts written for the project in commit e334fae, appended to the file after the 135 above, in file order.
ADDED = (
    "What is the capital of Argentina?", "What is the capital of Sweden?", "What is the capital of Thailand?",
    "What is the capital of South Korea?", "What is the capital of Nigeria?", "What is the capital of New Zealand?",
    "What is the capital of Morocco?", "Which country has the largest population?",
    "What is the longest river in South America?", "On which continent is Mongolia?",
    "Which US state is the largest by area?", "What is the smallest country in the world?",
    "Which sea lies between Europe and Africa?", "What mountain range is often said to separate Europe and Asia?",
    "Which country is shaped like a boot?", "What is the official language of Austria?",
    "What currency is used in Switzerland?", "Which river flows through Paris?",
    "Name the largest island in the world.", "Which country is home to the Great Barrier Reef?",
    "In which country are the pyramids of Giza?", "What is the deepest lake in the world?",
    "Which planet is closest to the Sun?", "How many moons does Mars have?", "What is the nearest star to Earth?",
    "What gas do humans breathe out?", "What is the chemical formula for table salt?",
    "What part of the cell contains DNA?", "How many chambers does the human heart have?",
    "What is the largest organ of the human body?", "What is the unit of electrical resistance?",
    "What does a thermometer measure?", "Why is the sky blue? Answer briefly.",
    "What is the most abundant gas in Earth's atmosphere?", "What type of animal is a dolphin?",
    "How long does it take Earth to orbit the Sun?", "What are the three states of matter?",
    "Which blood cells help fight infection?", "Which part of the cell is called the powerhouse?",
    "Who was the first president of the United States?", "In what year did the Berlin Wall fall?",
    "Who is credited with inventing the telephone?", "Which civilization built Machu Picchu?",
    "Who wrote 'Pride and Prejudice'?", "In what year did the Titanic sink?", "Who developed the theory of relativity?",
    "What was the name of the ship that carried the Pilgrims to America in 1620?",
    "Who was the first woman to win a Nobel Prize?", "Which empire built the Colosseum?",
    "Who composed the Moonlight Sonata?", "Who painted 'The Starry Night'?", "Who was Cleopatra?",
    "What did the Wright brothers invent?", "What is 37 plus 48?", "What is 123 minus 57?", "What is 16 times 8?",
    "What is 144 divided by 12?", "What is half of 86?", "What is 1000 divided by 8?", "Calculate 315 + 142.",
    "What is 500 minus 238?", "If I have 3 boxes with 12 apples each, how many apples do I have?",
    "A shirt costs $20 and is 25% off. What is the sale price?", "What is 2 to the power of 10?",
    "What is one third of 27?", "Is 91 a prime number?", "Round 3.786 to one decimal place.",
    "How many ounces are in a pound?", "Convert 100 degrees Fahrenheit to Celsius.", "How many seconds are in an hour?",
    "Convert 6 feet to centimeters.", "How many inches are in a foot?", "Convert 30 degrees Celsius to Fahrenheit.",
    "How many cups are in a quart?", "Convert 10 kilograms to pounds.", "What does 'ubiquitous' mean?",
    "What does 'benevolent' mean?", "What does 'procrastinate' mean?", "Define osmosis in one sentence.",
    "Define metamorphosis in simple words.", "What does 'serendipity' mean?",
    "What is the meaning of the word 'nostalgia'?", "What does 'ambiguous' mean?",
    "Define biodiversity in one sentence.", "What does 'resilient' mean?", "What is an idiom?",
    "What does the idiom 'break the ice' mean?", "What does 'once in a blue moon' mean?",
    "What is the difference between 'affect' and 'effect'?", "What does 'meticulous' mean?", "What is a palindrome?",
    "Define renewable energy in one sentence.", "What does GDP stand for?", "What is onomatopoeia? Give an example.",
    "What does 'pragmatic' mean?", "Define empathy in one sentence.", "Give me a synonym for 'tired'.",
    "Give me a synonym for 'big'.", "What is a synonym for 'difficult'?", "Give me two synonyms for 'smart'.",
    "What is the opposite of 'expand'?", "What is the antonym of 'optimistic'?", "What is the opposite of 'rare'?",
    "Give me a synonym for 'beautiful'.", "What is the opposite of 'borrow'?", "What is the opposite of 'victory'?",
    "Give me a synonym for 'angry'.", "What is a more formal word for 'buy'?", "Give me a synonym for 'calm'.",
    "What is the opposite of 'transparent'?", "Write one sentence about a morning train ride.",
    "Write one sentence describing the smell of fresh bread.", "Write a haiku about a snowy mountain.",
    "Write a haiku about a sleeping cat.", "Write a short slogan for a bike repair shop.",
    "Write a slogan for a recycling campaign.", "Write the opening line of a mystery story.",
    "Write the first sentence of a fairy tale about a dragon.", "Write a short story opening set on a spaceship.",
    "Write a limerick about a clumsy penguin.", "Write a short birthday message for a friend.",
    "Write a one-sentence apology for being late to a meeting.",
    "Write a short product description for a reusable water bottle.", "Write a motivational quote about hard work.",
    "Write a short announcement for a library book sale.", "Write a short riddle and give the answer.",
    "Write a four-line poem about a lighthouse.", "Write a short toast for a wedding.",
    "Write a short get-well-soon message.", "Write a catchy title for a blog post about gardening.",
    "Write a short invitation to a picnic.", "Write one sentence about the first day of school.",
    "Write a short caption for a photo of a beach.", "Write a haiku about a cherry tree in bloom.",
    "Write a short out-of-office email reply.", "Write a two-sentence scary story.",
    "Write an opening line for a cover letter for a barista job.", "Write a short poem about a cup of hot chocolate.",
    "Translate 'good evening' into French.", "Translate 'how are you?' into Spanish.",
    "Translate 'please' into German.", "Translate 'I am hungry' into French.",
    "Translate 'where is the library?' into Spanish.", "Translate 'happy birthday' into German.",
    "Translate 'the cat is black' into French.", "Translate 'excuse me' into Spanish.",
    "Translate 'I don't understand' into German.", "Translate 'what time is it?' into French.",
    "Translate 'my name is Anna' into Spanish.", "Translate 'good luck' into German.",
    "How do you say 'water' in Spanish?", "How do you say 'friend' in French?", "How do you say 'apple' in German?",
    "Explain what a black hole is in one sentence.", "Explain how a rainbow forms in one sentence.",
    "Explain what DNA is in simple terms.", "Explain what a vaccine does in one sentence.",
    "Explain the difference between weather and climate.", "Explain what a solar eclipse is.",
    "Explain what the internet is in one sentence.", "Explain what a recession is in simple terms.",
    "Explain how a compass works.", "Explain what a food chain is.", "Explain the greenhouse effect in two sentences.",
    "Explain what an algorithm is in one sentence.", "Explain how interest on a savings account works.",
    "Explain what causes ocean tides.", "Explain why we have seasons in two sentences.",
    "Explain what a carbon footprint is.", "Explain what a hurricane is in one sentence.",
    "How do I remove a coffee stain from a shirt?", "What is a good way to start running?",
    "How can I make my phone battery last longer?", "Give me a tip for a job interview.",
    "How do I keep cut flowers fresh longer?", "What's a healthy snack for the afternoon?",
    "How can I stop procrastinating?", "How do I clean a cast iron pan?", "Give me a tip for learning a new language.",
    "How often should I water a cactus?", "How can I be more productive in the morning?",
    "What should I bring to a picnic?", "How do I politely decline an invitation?",
    "Suggest a simple dinner I can make in 20 minutes.", "How can I reduce my screen time?",
    "How do I unclog a sink without chemicals?", "Give me a tip for saving energy at home.",
    "What's a good stretch for a stiff neck?", "How can I make new friends in a new city?",
    "Suggest a gift for a friend who loves gardening.", "How do I prepare for a long flight?",
    "Suggest a name for a book club.", "Suggest a fun weekend activity for a family.",
    "How can I keep my desk organized?", "How should I store fresh herbs?",
    "Give me a tip for taking better photos with my phone.", "How do I reverse a list in Python?",
    "How do I reverse a string in Python?", "How do I read a file line by line in Python?",
    "What is the difference between a list and a tuple in Python?",
    "How do I check if a key exists in a Python dictionary?", "How do I convert a string to an integer in Python?",
    "What does the len function do in Python?", "How do I write a for loop in JavaScript?",
    "How do I sort a list of numbers in Python?", "What is a variable in programming?",
    "How do I print 'Hello, World!' in Java?", "What does HTML stand for?", "How do I create a new branch in Git?",
    "What is the difference between == and === in JavaScript?", "How do I remove duplicates from a list in Python?",
    "How do I get the current date in Python?", "How do I comment out a line in Python?",
    "How do I find the length of an array in JavaScript?", "What is recursion? Explain briefly.",
    "How do I install a package with pip?", "What does SQL stand for?",
    "Write a SQL query to select all rows from a table called users.",
    "How do I join a list of strings into one string in Python?", "How do I make text bold in HTML?",
    "Name three types of clouds.", "Name three mammals that live in the ocean.", "Name four fruits that are yellow.",
    "List three renewable energy sources.", "Name three famous painters.", "Name five countries in Africa.",
    "List three benefits of regular exercise.", "Name three instruments in an orchestra.",
    "List the planets in order from the Sun.", "Name three vegetables that grow underground.",
    "Name three types of triangles.", "Name three sports played with a ball.",
    "List four ingredients you need to make pancakes.", "Name three famous scientists.",
    "Name three birds that cannot fly.", "List three ways to reduce plastic waste.",
    "List three common programming languages.", "Name three animals that hibernate.",
    "What is the difference between a frog and a toad?", "Which is bigger, the Moon or Earth?",
    "What is the difference between a virus and bacteria?",
    "Which is heavier, a kilogram of feathers or a kilogram of iron?",
    "What is the difference between a lake and a pond?", "Compare cats and dogs as pets in two sentences.",
    "What is the difference between an alligator and a crocodile?", "Which is longer, a mile or a kilometer?",
    "What is the difference between a hurricane and a tornado?", "Is a tomato a fruit or a vegetable?",
    "What is the difference between baking soda and baking powder?", "Which travels faster, sound or light?",
    "What is the difference between a simile and a metaphor?",
    "What is the difference between a debit card and a credit card?", "What is the fastest land animal?",
    "How many hearts does an octopus have?", "What do caterpillars turn into?",
    "What is the national animal of Scotland?", "How many players does a soccer team have on the field?",
    "How often are the Summer Olympics held?", "What is the main ingredient in hummus?",
    "Which vitamin does the body make from sunlight?", "What is the longest bone in the human body?",
    "What is the largest country by area?", "Which country is pizza originally from?",
    "Who wrote the Harry Potter books?", "How many zeros are in one million?", "What is the Roman numeral for 50?",
    "What do you call a shape with eight sides?", "How many degrees are in a right angle?",
    "What is the perimeter of a square with sides of 5 cm?",
    "What is the area of a rectangle that is 4 meters by 7 meters?", "Quelle est la capitale de la Belgique ?",
    "Combien font 15 plus 27 ?", "Donne-moi un synonyme de « joli ».", "Écris une phrase sur la mer.",
    "Comment dit-on « merci » en anglais ?", "Qui a écrit « Les Misérables » ?",
    "Quel est le plus long fleuve de France ?", "Donne-moi un conseil pour apprendre l'anglais.",
    "Écris un court poème sur la neige.", "Que signifie le mot « bienveillant » ?", "¿Cuál es la capital de Colombia?",
    "¿Cuánto es 8 por 9?", "Escribe una frase sobre el verano.", "¿Qué significa la palabra «madrugada»?",
    "¿Quién pintó el Guernica?", "Dame un sinónimo de «grande».", "¿Cómo se dice «perro» en inglés?",
    "Dame un consejo para ahorrar dinero.", "Escribe un eslogan corto para una heladería.",
    "¿Cuál es el río más largo de España?", "Was ist die Hauptstadt von Österreich?", "Wie viel ist 25 plus 17?",
    "Schreibe einen Satz über den Frühling.", "Was bedeutet das Wort „Fernweh“?",
    "Wer hat den Buchdruck mit beweglichen Lettern in Europa erfunden?", "Nenne drei Haustiere.",
    "Wie sagt man „Schmetterling“ auf Englisch?", "Gib mir einen Tipp zum Wassersparen.",
    "Wie viele Bundesländer hat Deutschland?", "Erkläre in einem Satz, was ein Gletscher ist.",
)


def build_default() -> list[str]:
    """The default set, `anchor_prompts.jsonl`: the 135 templated prompts, then the 300 written ones."""
    return build(random.Random(SEED)) + list(ADDED)


# ---------------------------------------------------------------------------------------------------------------
# The xl set. Hand-written subjects, each put in one of several phrasings (`cross`). Subjects the facts sets ask
# about (facts.jsonl, facts_tune.jsonl) are left out here, and `check` refuses them where it can read them.

def cross(forms: list[str], items: Iterable) -> list[str]:
    """Each item in the next phrasing of `forms`, in turn (an item is a string or a tuple of format arguments)."""
    out = []
    for i, item in enumerate(items):
        args = item if isinstance(item, tuple) else (item,)
        out.append(forms[i % len(forms)].format(*args))
    return out


XL_COUNTRIES = [
    "Albania", "Andorra", "Angola", "Armenia", "Azerbaijan", "the Bahamas", "Bahrain", "Barbados", "Belarus",
    "Belize", "Benin", "Bhutan", "Bolivia", "Bosnia and Herzegovina", "Botswana", "Brunei", "Burkina Faso",
    "Burundi", "Cameroon", "Chad", "Costa Rica", "Cyprus", "Djibouti", "the Dominican Republic", "El Salvador",
    "Eritrea", "Fiji", "Gabon", "Guatemala", "Guinea", "Guyana", "Haiti", "Honduras", "Kazakhstan", "Kuwait",
    "Kyrgyzstan", "Laos", "Lesotho", "Liberia", "Liechtenstein", "Luxembourg", "Madagascar", "Malawi", "Mali",
    "Malta", "Mauritania", "Mauritius", "Moldova", "Monaco", "Montenegro", "Mozambique", "Myanmar", "Namibia",
    "Nicaragua", "Niger", "North Korea", "North Macedonia", "Oman", "Panama", "Papua New Guinea", "Paraguay",
    "Rwanda", "Samoa", "Sierra Leone", "Slovenia", "Somalia", "Suriname", "Tajikistan", "Tanzania", "Togo", "Tonga",
    "Trinidad and Tobago", "Turkmenistan", "the United Arab Emirates", "Uzbekistan", "Yemen", "Zambia", "the Maldives",
    "San Marino", "the Seychelles",
]
CAPITAL_FORMS = ["What is the capital of {}?", "Which city is the capital of {}?", "What city is the capital of {}?",
                 "Name the capital city of {}.", "What is the capital city of {}?", "Tell me the capital of {}."]
US_STATES = ["Florida", "Illinois", "Alaska", "Hawaii", "Nevada", "Oregon", "Ohio", "Colorado", "Arizona",
             "Massachusetts", "Pennsylvania", "Michigan", "Louisiana", "Tennessee", "Utah", "Minnesota", "Virginia",
             "Georgia", "New Mexico", "Kentucky", "Missouri"]
STATE_FORMS = ["What is the capital of the US state of {}?", "Which city is the state capital of {}?",
               "What is the state capital of {}?"]
PROVINCE_CAPITALS = [
    "What is the capital of the Canadian province of British Columbia?",
    "Which city is the capital of the province of Quebec?", "What is the capital of Alberta?",
    "Name the capital city of Nova Scotia.", "What is the provincial capital of Manitoba?",
    "What is the capital of the Australian state of Queensland?",
    "Which city is the capital of the Australian state of Victoria?", "What is the capital of Western Australia?",
    "Name the capital city of Tasmania.", "What is the state capital of South Australia?",
]
REVERSE_CAPITALS = ["Lisbon", "Ottawa", "Canberra", "Madrid", "Athens", "Oslo", "Stockholm", "Warsaw", "Dublin",
                    "Lima", "Buenos Aires", "Bangkok", "Seoul", "Wellington", "Vienna", "Brussels", "Ankara",
                    "Berlin", "New Delhi", "Nairobi", "Bogotá", "Abuja", "Tbilisi", "Yerevan", "Baku"]
REVERSE_FORMS = ["Which country has {} as its capital?", "{} is the capital of which country?",
                 "Of which country is {} the capital?"]


def capitals() -> list[str]:
    return (cross(CAPITAL_FORMS, XL_COUNTRIES) + cross(STATE_FORMS, US_STATES)
            + PROVINCE_CAPITALS
            + cross(REVERSE_FORMS, REVERSE_CAPITALS))


NAMES = ["Maya", "Leo", "Priya", "Omar", "Hannah", "Lucas", "Aisha", "Ben", "Chloe", "Diego", "Emma", "Felix",
         "Grace", "Hugo", "Ivy", "Jonas", "Kira", "Liam", "Nina", "Oscar"]
ADD_FORMS = ["What is {a} plus {b}?", "What's {a} + {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
             "What do you get when you add {a} and {b}?", "How much is {a} plus {b}?"]
SUB_FORMS = ["What is {a} minus {b}?", "Subtract {b} from {a}.", "What is {a} - {b}?", "How much is {a} take away {b}?",
             "What do you get if you subtract {b} from {a}?"]
MUL_FORMS = ["What is {a} times {b}?", "Multiply {a} by {b}.", "What is the product of {a} and {b}?",
             "What is {a} × {b}?", "What is {a} multiplied by {b}?", "How much is {a} times {b}?"]
DIV_FORMS = ["What is {p} divided by {b}?", "Divide {p} by {b}.", "What is {p} ÷ {b}?",
             "How many times does {b} go into {p}?"]
PERCENT_FORMS = ["What is {p}% of {n}?", "What is {p} percent of {n}?", "Calculate {p}% of {n}."]
WORD_PROBLEMS = [
    ("{nm} has {a} stickers and buys {b} more. How many stickers does {nm} have now?", (10, 60), (3, 30)),
    ("A library has {a} books on a shelf and lends out {b} of them. How many books are left on the shelf?",
     (40, 120), (5, 35)),
    ("A farmer plants {b} rows of apple trees with {a} trees in each row. How many trees are there in total?",
     (6, 20), (3, 12)),
    ("{p} cookies are shared equally among {b} children. How many cookies does each child get?", (3, 9), (2, 8)),
    ("A bus has {a} passengers, and {b} more get on at the next stop. How many passengers are on the bus now?",
     (8, 40), (2, 15)),
    ("Notebooks cost {b} dollars each. How much do {a} notebooks cost in total?", (3, 12), (2, 9)),
    ("A car drives at {a} kilometers per hour for {b} hours. How far does it travel in total?", (40, 100), (2, 5)),
    ("{nm} reads {b} pages each day. How many pages does {nm} read in {a} days?", (3, 14), (5, 30)),
    ("A class has {a} students and {b} of them are absent today. How many students are left in the class?",
     (20, 35), (2, 8)),
    ("{nm} saves {b} dollars each week. How much has {nm} saved after {a} weeks?", (4, 12), (5, 25)),
    ("A pizza is cut into {p} slices and {b} people share it equally. How many slices does each person get?",
     (2, 4), (2, 6)),
    ("There are {a} red marbles and {b} blue marbles in a bag. How many marbles are there altogether?",
     (5, 40), (5, 40)),
    ("A rope is {a} meters long. If you cut off {b} meters, how much rope remains?", (10, 50), (2, 9)),
    ("{nm} buys {b} packs of pencils with {a} pencils in each pack. How many pencils is that in total?",
     (6, 12), (2, 6)),
    ("A baker makes {a} muffins and sells {b} of them. How many muffins are left?", (24, 90), (5, 23)),
]
ARITHMETIC_EXTRA = [  # fractions and decimals; dropped if their numbers are taken
    "What is 1/2 plus 1/4?", "What is 3/4 minus 1/2?", "What is 2/3 of 12?", "What is 1/3 plus 1/6?",
    "What is 2.5 plus 1.75?", "What is 10.5 minus 3.2?", "What is 0.5 times 18?", "What is 4.2 plus 3.9?",
    "What is 5 minus 12?", "What is 3 minus 10?", "What is 7 + 8 + 9?", "What is 15 + 20 + 35?",
]
NUMBER_QUESTIONS = [  # numbers without a sum to key on: parity, primes, rounding, numerals, geometry, time, money
    "Is 17 a prime number?", "Is 21 a prime number?", "Is 57 a prime number?", "Is 97 a prime number?",
    "Is 49 a prime number?", "Is 51 a prime number?", "Is 348 an even or an odd number?",
    "Is 735 an even or an odd number?", "Is 1,001 an even or an odd number?", "Is zero an even number?",
    "Round 7.46 to the nearest whole number.", "Round 12.5 to the nearest whole number.",
    "Round 2,348 to the nearest hundred.", "Round 86 to the nearest ten.", "Round 0.666 to two decimal places.",
    "What is 14 in Roman numerals?", "What is 19 in Roman numerals?", "What number is XL in Roman numerals?",
    "What is 2024 in Roman numerals?", "What number does the Roman numeral D stand for?",
    "Write the number 47 in words.", "Write the number 1,250 in words.", "Write 3,006 in words.",
    "Which is larger, 0.5 or 0.45?", "Which is bigger, 3/4 or 2/3?", "Which is smaller, 0.09 or 0.1?",
    "Is 1/2 the same as 0.5?", "What is 0.25 as a fraction?", "What is 3/5 as a decimal?",
    "What is 0.75 as a percentage?", "How many sides does a pentagon have?", "How many sides does a decagon have?",
    "How many faces does a cube have?", "How many edges does a cube have?",
    "How many degrees is each angle of an equilateral triangle?", "What do the angles of a triangle add up to?",
    "What is the area of a square with sides of 6 centimeters?",
    "What is the perimeter of a rectangle that is 3 meters by 8 meters?",
    "What is the circumference of a circle with a radius of 1 meter, roughly?",
    "If a movie starts at 7:30 p.m. and lasts two hours, what time does it end?",
    "If it is 9:15 now, what time will it be in 45 minutes?", "How many minutes are there between 2:40 and 4:10?",
    "If I pay with a 20-dollar bill for something that costs 13 dollars, how much change should I get?",
    "What day of the week comes three days after Friday?", "If today is Monday, what day will it be in ten days?",
    "What is an even number?", "What is the smallest two-digit number?", "What is the largest three-digit number?",
]


def arithmetic_xl(rng: random.Random, taken: set) -> list[str]:
    """Sums, differences, products, quotients, powers, fractions, percentages and word problems; no two share
    their numbers, nor with the facts and ordinary prompt sets (`taken` holds those keys)."""
    out: list[str] = []

    def take(text: str) -> bool:
        key = arithmetic_key(text)
        assert key is not None, text
        if key in taken or text in out:
            return False
        taken.add(key)
        out.append(text)
        return True

    def fill(n: int, make) -> None:
        made = tries = 0
        while made < n:
            tries += 1
            assert tries < 100 * n, "arithmetic: ran out of fresh numbers"
            made += take(make(made))

    def add(i):
        return ADD_FORMS[i % len(ADD_FORMS)].format(a=rng.randint(12, 199), b=rng.randint(5, 99))

    def sub(i):
        a = rng.randint(30, 300)
        return SUB_FORMS[i % len(SUB_FORMS)].format(a=a, b=rng.randint(3, a - 5))

    def mul(i):
        return MUL_FORMS[i % len(MUL_FORMS)].format(a=rng.randint(6, 25), b=rng.randint(3, 12))

    def div(i):
        b = rng.randint(2, 12)
        return DIV_FORMS[i % len(DIV_FORMS)].format(p=b * rng.randint(3, 15), b=b)

    def power(i):  # per nine: four squares, a cube (few cubes are free), four square roots
        kind = i % 9
        if kind < 4:
            return rng.choice(["What is {} squared?", "What is the square of {}?"]).format(rng.randint(12, 30))
        if kind == 4:
            return rng.choice(["What is {} cubed?", "What is the cube of {}?"]).format(rng.randint(2, 10))
        return f"What is the square root of {rng.randint(2, 20) ** 2}?"

    def part(i):
        kind = i % 4
        if kind == 0:
            return f"What is half of {2 * rng.randint(11, 150)}?"
        if kind == 1:
            return f"What is a quarter of {4 * rng.randint(3, 50)}?"
        if kind == 2:
            return f"What is one third of {3 * rng.randint(4, 40)}?"
        return f"What is three quarters of {4 * rng.randint(2, 25)}?"

    def percent(i):
        return PERCENT_FORMS[i % len(PERCENT_FORMS)].format(
            p=rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75]), n=20 * rng.randint(1, 20))

    def word_problem(i):
        form, (alo, ahi), (blo, bhi) = WORD_PROBLEMS[i % len(WORD_PROBLEMS)]
        a, b = rng.randint(alo, ahi), rng.randint(blo, bhi)
        return form.format(nm=rng.choice(NAMES), a=a, b=b, p=a * b)

    def sequence(i):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        terms = [start * step ** k for k in range(4)] if i % 3 == 2 else [start + step * k for k in range(4)]
        return "What is the next number in the sequence {}, {}, {}, {}?".format(*terms)

    for n, make in [(30, add), (26, sub), (28, mul), (22, div), (18, power), (16, part), (15, percent),
                    (30, word_problem), (8, sequence)]:
        fill(n, make)
    for text in ARITHMETIC_EXTRA:
        take(text)
    return out + NUMBER_QUESTIONS


UNIT_PAIRS = [  # (smaller unit, larger unit singular, plural, amounts); no pair a facts or ordinary question uses
    ("cups", "gallon", "gallons", (2, 6)), ("millimeters", "meter", "meters", (2, 9)),
    ("inches", "foot", "feet", (2, 10)), ("ounces", "pound", "pounds", (2, 10)), ("hours", "week", "weeks", (2, 6)),
    ("months", "decade", "decades", (2, 5)), ("kilograms", "metric ton", "metric tons", (2, 9)),
    ("milligrams", "gram", "grams", (2, 9)), ("days", "fortnight", "fortnights", (2, 6)),
]
UNIT_FORMS = ["How many {s} are in {n} {b}?", "How many {s} are there in {n} {b}?", "Convert {n} {b} to {s}."]
CONVERSIONS = [("miles", "kilometers", (2, 26)), ("kilometers", "miles", (3, 42)), ("pounds", "kilograms", (2, 50)),
               ("yards", "meters", (2, 24)), ("liters", "gallons", (2, 20)),
               ("degrees Celsius", "degrees Fahrenheit", (11, 40)), ("degrees Fahrenheit", "degrees Celsius", (41, 99)),
               ("feet", "meters", (2, 30)), ("ounces", "grams", (2, 16)), ("cups", "milliliters", (2, 4))]
UNITS_WRITTEN = [
    "What is the SI unit of pressure?", "What is the SI unit of electric charge?",
    "What is the SI unit of electric potential?", "What is the SI unit of luminous intensity?",
    "What is the SI unit for the amount of a substance?", "What is the SI unit of capacitance?",
    "What does a kilowatt-hour measure?", "What does a decibel measure?", "What does a light-year measure?",
    "What is a hectare?", "How many square meters are in a hectare?", "How many milligrams are in a gram?",
    "How many bytes are in a kilobyte?", "How many bits are in a byte?", "How many teaspoons are in a tablespoon?",
    "How many tablespoons are in a cup?", "How many grams are in an ounce, roughly?",
    "How many kilometers are in a mile, roughly?", "What is a nautical mile?", "What does 'mph' stand for?",
    "What does 'rpm' stand for?", "Which is longer, a yard or a meter?", "Which is heavier, a pound or a kilogram?",
    "Which holds more, a liter or a quart?", "What unit is used to measure angles?",
    "What is the abbreviation for kilogram?", "What is the abbreviation for milliliter?",
    "What body temperature in Celsius counts as a fever?", "How many hours are in a weekend?",
    "How many days are in a fortnight?", "How many seasons are in a year?", "How many seconds are in a day?",
    "How many weeks are in a month, roughly?", "How many millimeters are in a meter?", "What is a metric ton?",
    "Is 10 degrees Fahrenheit colder than 0 degrees Celsius?",
]


def units(rng: random.Random, taken: set) -> list[str]:
    """Conversions (no unit pair and amount a facts or ordinary question asks) and questions about units."""
    out: list[str] = []

    def amounts(target: str, source: str, lo: int, hi: int, k: int) -> list[int]:
        free = [n for n in range(lo, hi + 1) if ("units", singular(target), singular(source), str(n)) not in taken]
        assert len(free) >= k, (target, source)
        picked = rng.sample(free, k)
        taken.update(("units", singular(target), singular(source), str(n)) for n in picked)
        return picked

    for small, big, bigs, (lo, hi) in UNIT_PAIRS:
        for n in amounts(small, big, lo, hi, 3):
            out.append(UNIT_FORMS[len(out) % len(UNIT_FORMS)].format(s=small, n=n, b=bigs))
    for source, target, (lo, hi) in CONVERSIONS:
        out += [f"Convert {n} {source} to {target}." for n in amounts(target, source, lo, hi, 2)]
    return out + UNITS_WRITTEN


ELEMENTS = ["nitrogen", "calcium", "magnesium", "chlorine", "sulfur", "phosphorus", "aluminum", "tin", "mercury",
            "uranium", "neon", "platinum", "nickel", "iodine", "fluorine", "lithium", "silicon"]
ELEMENT_FORMS = ["What is the chemical symbol for {}?", "What is the symbol for {} on the periodic table?",
                 "Which letters stand for {} on the periodic table?", "Give the chemical symbol of {}."]
SYMBOLS = {"Ar": "argon", "Co": "cobalt", "Ti": "titanium", "W": "tungsten", "Br": "bromine", "Mn": "manganese",
           "Cr": "chromium", "Ra": "radium",
           # read only: the elements the facts and ordinary sets ask about, should a question give their symbol
           "He": "helium", "Pb": "lead", "Ag": "silver", "Zn": "zinc", "Cu": "copper", "Na": "sodium", "Fe": "iron",
           "Au": "gold", "K": "potassium", "C": "carbon", "H": "hydrogen", "O": "oxygen"}
SYMBOL_FORMS = ["Which element has the chemical symbol {}?", "What element does the symbol {} stand for?",
                "Which element is represented by the symbol {}?"]
SCIENCE = [
    "What is the speed of sound in air, roughly?", "Does sound travel faster in water or in air?",
    "Which color of visible light has the longest wavelength?", "What does a prism do to white light?",
    "What do we call the bending of light as it passes from air into water?",
    "What is it called when water vapor turns back into liquid water?",
    "What is it called when a solid turns directly into a gas?", "What kind of energy does a moving object have?",
    "What kind of energy is stored in a stretched rubber band?", "What are the two ends of a magnet called?",
    "Which metals are attracted to a magnet?", "Name a material that is a good conductor of electricity.",
    "Name a material that does not conduct electricity well.", "What is a catalyst in chemistry?",
    "What is rust, chemically speaking?", "What two metals are mixed to make bronze?", "What is steel mainly made of?",
    "What is the lightest metal?", "Which gas makes advertising signs glow red-orange?",
    "What happens when you mix baking soda and vinegar?", "What is dry ice made of?",
    "What is the chemical formula for ammonia?", "What is the chemical formula for ozone?",
    "What is the chemical formula for glucose?", "What is the chemical formula for hydrogen peroxide?",
    "What is plasma in physics?", "What is the difference between mass and weight?",
    "What instrument measures wind speed?", "What instrument is used to record earthquakes?",
    "What does a hygrometer measure?", "What does a voltmeter measure?", "What is static electricity?",
    "Why does a balloon stick to a wall after you rub it on your hair?", "What is the largest bird in the world?",
    "What is the fastest bird in the world?", "What is the largest land animal?",
    "What is the largest fish in the ocean?", "What is the largest species of big cat?",
    "What is the tallest kind of tree in the world?", "What do pandas mainly eat?", "What do koalas eat?",
    "Where do polar bears live in the wild?", "Which animal is known as the ship of the desert?",
    "What is the only mammal that can truly fly?",
    "Which animal can change its skin color to blend in with its surroundings?", "Is a whale a fish or a mammal?",
    "Is a penguin a bird or a mammal?", "How many wings does a butterfly have?", "How many kidneys does a person have?",
    "What do the kidneys do?", "Which organ produces insulin?", "What is the largest muscle in the human body?",
    "What is the smallest bone in the human body?", "What is the largest internal organ in the human body?",
    "What is the hardest substance in the human body?", "What are the five senses?",
    "Which vitamin are carrots known for?", "What pigment gives human skin its color?",
    "What is a normal resting heart rate for an adult, roughly?", "How long does a typical human pregnancy last?",
    "What part of a plant absorbs water from the soil?", "What part of a flower makes pollen?",
    "What do plants need in order to grow?", "What is the study of weather called?",
    "What is the study of rocks called?", "What is the study of insects called?",
    "What is the study of fossils called?", "What is a shooting star?", "What is a comet made of?",
    "Which planet spins on its side?", "Which planet has the longest day?",
    "What is the largest moon in the solar system?", "What is the name of Saturn's largest moon?",
    "Which dwarf planet used to be counted as the ninth planet?",
    "Between which two planets is the main asteroid belt?", "What causes a lunar eclipse?",
    "What is a constellation?", "What is the North Star also called?", "How long does sunlight take to reach Earth?",
    "What is a supernova?", "Why does the Moon shine at night?",
    "How strong is gravity on the Moon compared with Earth?", "What causes earthquakes?", "What is a tsunami?",
    "What are the three main types of rock?", "What is a fossil?", "What causes wind?", "What is humidity?",
    "What is the ozone layer?", "How do clouds form?", "What is an avalanche?", "What does the Richter scale measure?",
    "What is a food web?", "What are the three main body parts of an insect?",
    "What is an invertebrate? Give an example.", "What is it called when plants lose water through their leaves?",
    "How many chromosomes do humans have?", "What is a gene?", "Which blood type is known as the universal donor?",
    "What does the liver do?", "What causes thunder?", "What is lightning?", "What is germination?",
    "How are flowers pollinated?", "How do bats find their way in the dark?", "How does sound travel?",
    "What is an echo?", "What is a lever? Give an everyday example.", "What is a pulley used for?",
    "Which gas is known as laughing gas?",
]


def science() -> list[str]:
    return cross(ELEMENT_FORMS, ELEMENTS) + cross(SYMBOL_FORMS, list(SYMBOLS)[:8]) + SCIENCE


BOOKS = ["The Great Gatsby", "To Kill a Mockingbird", "Jane Eyre", "Wuthering Heights", "Frankenstein", "Dracula",
         "The Hobbit", "Alice's Adventures in Wonderland", "Oliver Twist", "The Adventures of Tom Sawyer",
         "Crime and Punishment", "The Divine Comedy", "The Little Prince", "Treasure Island",
         "The Old Man and the Sea", "Little Women", "Robinson Crusoe", "Gulliver's Travels", "The Jungle Book",
         "Anne of Green Gables", "One Hundred Years of Solitude", "The Canterbury Tales", "Charlotte's Web",
         "The Tale of Peter Rabbit", "Brave New World", "The Hound of the Baskervilles", "Madame Bovary",
         "Peter Pan", "The Wind in the Willows", "Heidi", "The Communist Manifesto", "The Art of War"]
BOOK_FORMS = ["Who wrote '{}'?", "Who is the author of '{}'?", "Which writer wrote '{}'?", "Who wrote the book '{}'?"]
PAINTINGS = ["The Scream", "Girl with a Pearl Earring", "The Persistence of Memory", "The Night Watch",
             "Water Lilies", "The Birth of Venus", "American Gothic", "The Kiss", "The Great Wave off Kanagawa",
             "Sunflowers", "The Garden of Earthly Delights", "Las Meninas"]
PAINTING_FORMS = ["Who painted '{}'?", "Which artist painted '{}'?", "Who is the painter of '{}'?"]
MUSIC = ["The Nutcracker", "Swan Lake", "The Blue Danube", "Clair de Lune", "Messiah", "Boléro", "The Planets",
         "Carmen", "La Traviata", "The Barber of Seville", "Rhapsody in Blue", "The Well-Tempered Clavier",
         "Peter and the Wolf", "Canon in D", "Ride of the Valkyries"]
MUSIC_FORMS = ["Who composed '{}'?", "Which composer wrote '{}'?"]
HISTORY = [
    "Who invented the World Wide Web?", "Who discovered X-rays?", "Who invented dynamite?",
    "Who is known for improving the steam engine in the 1700s?",
    "Which two scientists described the double-helix structure of DNA in 1953?",
    "Who is credited with inventing the radio?", "Who proposed that the Earth moves around the Sun?",
    "Who created the periodic table of the elements?", "What did Benjamin Franklin famously study with a kite?",
    "Who is often called the first computer programmer?", "Who invented the Braille writing system?",
    "Who invented the diesel engine?", "Which scientist discovered radium together with her husband?",
    "In what year did the American Civil War end?", "In what year did the Wall Street Crash happen?",
    "In what year did the Chernobyl disaster happen?", "In what year was the Magna Carta sealed?",
    "In what year did the Battle of Hastings take place?", "Who was the first emperor of China?",
    "Why was the Great Wall of China built?", "Who was Queen Victoria?", "Who was Joan of Arc?",
    "Who was Marco Polo?", "What is Martin Luther King Jr.'s most famous speech called?", "Who was Rosa Parks?",
    "Who was Florence Nightingale?", "Who was Confucius?", "Who was Charlemagne?", "Who was Tutankhamun?",
    "Who was Frida Kahlo?", "Who was Harriet Tubman?", "Who was Socrates?", "Who was King Arthur?",
    "Who was Galileo Galilei?", "Which civilization built Chichen Itza?",
    "In which ancient city-state did democracy first develop?", "What was the Silk Road?",
    "What was the Industrial Revolution?", "What was the Great Depression?", "What was the Black Death?",
    "Where were the ancient Olympic Games held?", "Which explorer first reached India by sailing around Africa?",
    "From which country did the United States buy Alaska?",
    "Which English queen ruled when the Spanish Armada was defeated?",
    "In what year were the first modern Olympic Games held?", "What was the Colossus of Rhodes?",
    "What did the ancient Egyptians write on?", "What are hieroglyphs?",
    "Who was the longest-reigning British monarch?",
    "What was the Hundred Years' War?", "Who were the Vikings?", "Who were the Aztecs?",
    "What was the capital of the Aztec Empire?", "What was the California Gold Rush?", "What is the Rosetta Stone?",
    "What is the Magna Carta?", "Who were the samurai?", "What was the Ming dynasty known for?",
    "What was the Bronze Age?", "What was the Stone Age?", "Who was Hammurabi?", "Who was Sitting Bull?",
    "Who was Simón Bolívar?", "Who was Catherine the Great?", "Who was Peter the Great?", "Who was Mansa Musa?",
    "Who started the Protestant Reformation?", "What was the Enlightenment?", "What were the Crusades?",
    "What was the Ottoman Empire?", "What was the Meiji Restoration?", "What was the Underground Railroad?",
    "What was the Louisiana Purchase?", "Which civilization built the city of Petra?",
    "Who was the first woman to serve on the US Supreme Court?", "Who founded the Red Cross?",
    "Which queen of Egypt built a famous temple at Deir el-Bahari?", "What was the Hanseatic League?",
]


def history() -> list[str]:
    return cross(BOOK_FORMS, BOOKS) + cross(PAINTING_FORMS, PAINTINGS) + cross(MUSIC_FORMS, MUSIC) + HISTORY


MEANING_WORDS = ["eloquent", "tenacious", "gregarious", "ambivalent", "lethargic", "obsolete", "verbose", "mundane",
                 "vivid", "reluctant", "sincere", "elaborate", "feasible", "inevitable", "lucid", "nuance",
                 "oblivious", "plausible", "quaint", "robust", "scrutinize", "spontaneous", "subtle", "superficial",
                 "tedious", "trivial", "versatile", "whimsical", "zealous", "altruistic", "melancholy", "eclectic",
                 "integrity", "wanderlust", "jovial", "aloof", "naive", "prudent", "impeccable", "hinder", "mitigate",
                 "tranquil", "resourceful", "ominous", "vigilant", "cumbersome", "dubious", "hospitable", "meander"]
MEANING_FORMS = ["What does '{}' mean?", "What is the meaning of the word '{}'?", "Define the word '{}'.",
                 "What does the word '{}' mean?", "Explain the meaning of '{}'."]
SYNONYM_WORDS = ["cold", "funny", "easy", "old", "rich", "strong", "begin", "finish", "help", "look", "say", "walk",
                 "important", "strange", "delicious", "scared", "honest", "boring", "famous", "busy", "clean", "dark",
                 "shy", "lucky", "worried", "polite", "wet", "huge"]
SYNONYM_FORMS = ["Give me a synonym for '{}'.", "What is another word for '{}'?", "What's a synonym of '{}'?",
                 "Suggest a word that means the same as '{}'."]
ANTONYM_WORDS = ["asleep", "arrive", "accept", "shallow", "empty", "forget", "include", "inside", "lazy", "maximum",
                 "minor", "multiply", "patient", "permanent", "private", "rough", "strict", "thick", "tight", "true",
                 "visible", "wild", "wise", "increase", "sharp", "success", "giant", "whisper", "clockwise"]
ANTONYM_FORMS = ["What is the opposite of '{}'?", "Give me an antonym for '{}'.",
                 "What word means the opposite of '{}'?", "What's the antonym of '{}'?"]
PLURAL_WORDS = ["person", "ox", "cactus", "leaf", "knife", "wolf", "fish", "sheep", "deer", "crisis", "analysis",
                "phenomenon", "criterion", "hero", "potato", "box", "baby", "city", "bus", "shelf", "half", "die",
                "moose"]
PLURAL_FORMS = ["What is the plural of '{}'?", "What is the plural form of '{}'?",
                "How do you write '{}' in the plural?"]
PAST_WORDS = ["swim", "sing", "begin", "bring", "buy", "catch", "choose", "drink", "drive", "fly", "forget", "freeze",
              "give", "hold", "know", "lead", "ride", "see", "speak", "teach", "think", "throw", "wear", "take",
              "sleep", "build", "fall", "feel"]
PAST_FORMS = ["What is the past tense of '{}'?", "What's the past tense of the verb '{}'?",
              "What is the simple past of '{}'?"]
PARTICIPLE_WORDS = ["break", "hide", "shake", "bite", "forgive", "steal"]
TRANSLATE_WORDS = [("red", "French"), ("table", "Spanish"), ("school", "German"), ("family", "Italian"),
                   ("chair", "French"), ("tree", "German"), ("window", "Spanish"), ("milk", "Italian"),
                   ("flower", "Spanish"), ("mother", "German"), ("cheese", "French"), ("train", "Italian"),
                   ("car", "German"), ("city", "French"), ("welcome", "Spanish"), ("Sunday", "French"),
                   ("green", "Italian"), ("kitchen", "Spanish"), ("friendship", "Portuguese"), ("rain", "Portuguese")]
TRANSLATE_WORD_FORMS = ["What is the {1} word for '{0}'?", "How do you say '{0}' in {1}?",
                        "Translate '{0}' into {1}."]
TRANSLATE_PHRASES = [("I am tired", "Spanish"), ("the weather is nice", "French"),
                     ("how much does this cost?", "Spanish"), ("where is the bathroom?", "German"),
                     ("nice to meet you", "Italian"), ("have a good day", "French"), ("the coffee is ready", "German"),
                     ("what is this?", "Italian"), ("I need help", "French"), ("I live in a small town", "German"),
                     ("my brother is tall", "Spanish"), ("I love music", "Italian"), ("see you soon", "French"),
                     ("the train is late", "Dutch"), ("happy new year", "Portuguese")]
TRANSLATE_PHRASE_FORMS = ["Translate '{0}' into {1}.", "How do you say '{0}' in {1}?", "How would I say '{0}' in {1}?"]
FOREIGN_TERMS = ["déjà vu", "bon appétit", "siesta", "fiesta", "hasta luego", "carpe diem", "kindergarten",
                 "c'est la vie", "por favor", "wunderbar", "bon voyage", "Schadenfreude", "gesundheit", "rendezvous",
                 "Zeitgeist", "dolce vita"]
FOREIGN_FORMS = ["What does '{}' mean in English?", "What is the meaning of '{}'?",
                 "Where does '{}' come from, and what does it mean?"]
LANGUAGE_COUNTRIES = ["Greece", "Poland", "Sweden", "Thailand", "Turkey", "Norway", "Colombia", "South Korea",
                      "Belgium", "Canada", "India", "Ireland"]
LANGUAGE_FORMS = ["What language is mainly spoken in {}?", "What is the main language of {}?",
                  "Which language do most people in {} speak?", "What is the official language of {}?"]
BABY_ANIMALS = ["horse", "sheep", "goat", "kangaroo", "bear", "duck", "swan", "owl", "deer", "pig", "lion", "eagle",
                "chicken", "seal", "elephant", "fox"]
BABY_FORMS = ["What is a baby {} called?", "What do you call a young {}?", "What is the name for a baby {}?"]
ANIMAL_GROUPS = ["lions", "crows", "fish", "wolves", "owls", "whales", "ants", "sheep", "kangaroos", "dolphins"]
GROUP_FORMS = ["What is a group of {} called?", "What do you call a group of {}?"]
GRAMMAR_TERMS = ["an adjective", "a pronoun", "a preposition", "a conjunction", "an interjection", "a syllable",
                 "a compound word", "a homophone", "an acronym", "alliteration", "a prefix", "a suffix",
                 "a contraction", "the passive voice", "an oxymoron", "a proper noun", "a clause", "hyperbole",
                 "personification"]
GRAMMAR_FORMS = ["What is {}?", "Explain what {} is.", "What is {}? Give an example."]
IDIOMS = ["hit the sack", "a piece of cake", "under the weather", "spill the beans", "cost an arm and a leg",
          "let the cat out of the bag", "bite the bullet", "the ball is in your court", "hit the nail on the head",
          "barking up the wrong tree", "a blessing in disguise", "call it a day", "when pigs fly",
          "on cloud nine", "in hot water", "burn the midnight oil", "get cold feet", "a penny for your thoughts"]
IDIOM_FORMS = ["What does '{}' mean?", "What does the idiom '{}' mean?", "Explain the phrase '{}'.",
               "What is the meaning of the expression '{}'?"]
ABBREVIATIONS = ["NASA", "ASAP", "FAQ", "DIY", "CEO", "ATM", "GPS", "PDF", "USB", "RSVP", "NATO", "CPU", "RAM",
                 "URL", "UNESCO"]
ABBREVIATION_FORMS = ["What does {} stand for?", "What is {} short for?", "What do the letters {} stand for?"]
RHYMES = ["light", "tree", "day", "cake", "star", "rain", "bell", "night", "blue"]
RHYME_FORMS = ["Give me three words that rhyme with '{}'.", "What are some words that rhyme with '{}'?"]
LANGUAGE_WRITTEN = [
    "How many syllables are in the word 'elephant'?", "What is the first letter of the Greek alphabet?",
    "What is the last letter of the Greek alphabet?", "What is the difference between 'e.g.' and 'i.e.'?",
    "When should I use 'a' and when should I use 'an'?",
    "Is it 'fewer' or 'less' in the sentence 'There are ___ cars on the road today'?",
    "What is the difference between 'who' and 'whom'?",
    "Should I write 'its' or 'it's' in 'The bird flapped ___ wings'?", "What is the comparative form of 'good'?",
    "What is the superlative of 'bad'?", "What is the adverb form of 'quick'?", "What is the noun form of 'decide'?",
    "Which word means both a flying animal and a piece of sports equipment?",
    "Which language does the word 'ballet' come from?", "Which language does the word 'safari' come from?",
    "Which language does the word 'algebra' come from?", "How do you spell the word 'necessary'?",
    "Is 'irregardless' a real word?", "What is the difference between 'their', 'there' and 'they're'?",
    "What is the difference between 'lie' and 'lay'?", "What is the difference between 'farther' and 'further'?",
]


def language() -> list[str]:
    return (cross(MEANING_FORMS, MEANING_WORDS) + cross(SYNONYM_FORMS, SYNONYM_WORDS)
            + cross(ANTONYM_FORMS, ANTONYM_WORDS) + cross(PLURAL_FORMS, PLURAL_WORDS) + cross(PAST_FORMS, PAST_WORDS)
            + [f"What is the past participle of '{w}'?" for w in PARTICIPLE_WORDS]
            + cross(TRANSLATE_WORD_FORMS, TRANSLATE_WORDS) + cross(TRANSLATE_PHRASE_FORMS, TRANSLATE_PHRASES)
            + cross(FOREIGN_FORMS, FOREIGN_TERMS) + cross(LANGUAGE_FORMS, LANGUAGE_COUNTRIES)
            + cross(BABY_FORMS, BABY_ANIMALS) + cross(GROUP_FORMS, ANIMAL_GROUPS) + cross(GRAMMAR_FORMS, GRAMMAR_TERMS)
            + cross(IDIOM_FORMS, IDIOMS) + cross(ABBREVIATION_FORMS, ABBREVIATIONS) + cross(RHYME_FORMS, RHYMES)
            + LANGUAGE_WRITTEN)


LANDMARKS = ["the Acropolis", "Angkor Wat", "Stonehenge", "the Alhambra", "Neuschwanstein Castle",
             "the Leaning Tower of Pisa", "Table Mountain", "Uluru", "Niagara Falls", "the Grand Canyon", "Loch Ness",
             "the Christ the Redeemer statue", "the Matterhorn", "Mount Rushmore", "Lake Titicaca",
             "the Atacama Desert", "Easter Island", "Santorini", "Mount Etna", "the Serengeti",
             "the Blue Mosque", "the Dead Sea"]
WHERE_FORMS = ["In which country is {}?", "Which country is {} in?", "Where is {} located?"]
CITIES = ["Kyoto", "Marrakesh", "Cusco", "Zurich", "Toronto", "Dubai", "Rio de Janeiro", "Istanbul", "Mumbai",
          "Krakow", "Salzburg", "Marseille", "Porto", "Bruges", "Auckland", "Seville", "Milan", "Vancouver", "Osaka",
          "Cape Town", "Florence", "Geneva", "Timbuktu", "Casablanca"]
CITY_FORMS = ["In which country is the city of {}?", "Which country is {} in?", "{} is a city in which country?"]
CONTINENT_COUNTRIES = ["Argentina", "India", "Nigeria", "Canada", "Thailand", "Peru", "Norway", "Mexico",
                       "Madagascar", "New Zealand", "Greenland"]
CONTINENT_FORMS = ["Which continent is {} in?", "On which continent is {}?", "{} is on which continent?"]
RIVER_CITIES = ["Vienna", "Cologne", "New Orleans", "Lisbon", "Warsaw", "Bangkok", "Montreal", "Glasgow", "Dresden",
                "Saint Petersburg", "Varanasi", "Florence"]
RIVER_FORMS = ["Which river flows through {}?", "What river runs through {}?", "Name the river that flows through {}."]
GEOGRAPHY = [
    "What is the highest mountain in Europe?", "What is the highest mountain in North America?",
    "What is the highest mountain in South America?", "What is the highest mountain in Australia?",
    "What is the longest river in Europe?", "What is the longest river in Asia?",
    "What is the longest river in Australia?", "What is the longest river in North America?",
    "Which ocean is the smallest?", "Which ocean lies between Africa and Australia?",
    "Which sea lies to the north of Turkey?", "What body of water separates England and France?",
    "Which sea separates Africa from the Arabian Peninsula?", "What is the largest lake in Africa?",
    "What is the largest of the Great Lakes?", "How many Great Lakes are there?", "What is the largest city in Canada?",
    "What is the largest city in India?", "What is the largest city in South Africa?",
    "What is the largest city in Nigeria?", "What is the most populous country in Africa?",
    "What is the smallest continent?", "What is the longest mountain range in the world?",
    "What is the largest rainforest in the world?", "Which US state is made up entirely of islands?",
    "What is the largest island in the Mediterranean Sea?", "Which island country lies just south of India?",
    "Which country is called the Emerald Isle?", "Which country is known as the Land of the Midnight Sun?",
    "Which city is nicknamed the Windy City?", "Which city-state is known as the Lion City?",
    "Which country has the longest coastline in the world?", "Which country is famous for its fjords?",
    "Where is the Gobi Desert?", "Which continent are the Andes in?", "Which countries does the Danube flow through?",
    "Which two continents does Turkey lie in?", "What is the southernmost continent?",
    "Which continent has the most countries?", "What is the deepest point in the ocean called?",
    "What is the tallest waterfall in the world?", "In which mountain range is Mont Blanc?",
    "Which country has the most lakes?", "Which country is famous for maple syrup?", "Why is the Dead Sea so salty?",
    "Which mountains separate France and Spain?",
    "Which country is the largest in Central America?", "Which islands are famous for their giant tortoises?",
    "What is the largest country in Scandinavia?",
]


def geography() -> list[str]:
    return (cross(WHERE_FORMS, LANDMARKS) + cross(CITY_FORMS, CITIES) + cross(CONTINENT_FORMS, CONTINENT_COUNTRIES)
            + cross(RIVER_FORMS, RIVER_CITIES) + GEOGRAPHY)


HOW_IT_WORKS = ["a refrigerator", "a microwave oven", "a solar panel", "a thermostat", "GPS", "an airplane wing",
                "a touchscreen", "Wi-Fi", "a heat pump", "a car engine", "an electric motor", "a digital camera",
                "noise cancellation", "a search engine", "a 3D printer", "a hydroelectric dam",
                "a wind turbine", "a QR code", "an elevator", "a pressure cooker", "a smoke detector",
                "a barcode scanner", "a hot air balloon", "a submarine", "a contactless card payment",
                "a dishwasher", "a pin tumbler lock", "an induction cooktop", "a fire extinguisher", "a toaster"]
HOW_IT_WORKS_FORMS = ["How does {} work?", "Explain how {} works in simple terms.", "Briefly explain how {} works.",
                      "How does {} work? Keep it short."]
WHY = [
    "Why do we yawn?", "Why is the ocean salty?", "Why do cats purr?", "Why does bread go stale?",
    "Why do onions make your eyes water?", "Why do we dream?", "Why does ice float on water?",
    "Why do stars twinkle?", "Why do we get goosebumps?", "Why do birds migrate?",
    "Why do our ears pop on an airplane?", "Why is exercise good for the brain?", "Why do we need sleep?",
    "Why does metal feel colder than wood at the same temperature?", "Why do some people need glasses?",
    "Why do apples turn brown after being cut?", "Why does the sea look blue?", "Why do we have time zones?",
    "Why do cats like sitting in boxes?", "Why do we hiccup?", "Why does popcorn pop?", "Why do mosquitoes bite?",
    "Why do dogs wag their tails?", "Why is it important to wash your hands?", "Why do we have fingerprints?",
    "Why are flamingos pink?", "Why do zebras have stripes?", "Why does hot air rise?",
    "Why do we feel dizzy after spinning around?", "Why does a spoon look bent in a glass of water?",
]
CONCEPTS = ["compound interest", "supply and demand", "machine learning", "cloud storage", "blockchain",
            "the stock market", "income tax", "the immune system", "climate change", "electricity", "metabolism",
            "an allergy", "cholesterol", "a credit score", "the placebo effect", "the scientific method",
            "opportunity cost", "interest rates", "an index fund", "a pension", "open-source software", "encryption",
            "a firewall", "a computer virus", "cookies on websites", "an operating system", "a mortgage", "jet lag",
            "muscle memory", "a time zone", "a trade deficit", "an exchange rate", "a balanced diet",
            "the circadian rhythm", "insurance", "a spreadsheet", "virtual reality", "a podcast"]
CONCEPT_FORMS = ["Explain {} in simple terms.", "What is {}? Keep it short.", "Give me a simple explanation of {}.",
                 "Explain {} to a ten-year-old.", "Explain {} in two sentences."]


def explanations() -> list[str]:
    return cross(HOW_IT_WORKS_FORMS, HOW_IT_WORKS) + WHY + cross(CONCEPT_FORMS, CONCEPTS)


TERMS = ["a delta", "a plateau", "a canyon", "an estuary", "a monsoon", "an oasis", "a tributary", "a thesis",
         "a fable", "a myth", "satire", "irony", "a paradox", "a hypothesis", "a molecule", "a nutrient", "a habitat",
         "a predator", "camouflage", "an invoice", "a dividend", "a franchise", "a monopoly", "a tariff",
         "a constitution", "a referendum", "a census", "an architect", "an archaeologist", "a symphony", "a sonnet",
         "a memoir", "a mosaic", "an archipelago", "a fjord", "a savanna", "a solstice", "an equinox",
         "a carbohydrate", "a warranty", "a security deposit", "a mentor", "an internship", "a landslide",
         "a geyser", "a crater", "a microbe", "a fossil fuel", "a marathon", "a recipe", "a cooperative",
         "a watershed"]
TERM_FORMS = ["Define {} in one sentence.", "What is {}? Answer in one sentence.", "Give a short definition of {}.",
              "In simple words, what is {}?"]


def definitions() -> list[str]:
    return cross(TERM_FORMS, TERMS)


HOWTO_XL = [
    "How do I make scrambled eggs?", "How do I cook rice on the stove?", "How do I make a simple tomato sauce?",
    "How do I sharpen a kitchen knife?", "How do I tie a tie?", "How do I iron a shirt?",
    "How do I sew a button back on?", "How do I fix a flat bicycle tire?", "How do I check the oil in my car?",
    "How do I jump-start a car?", "How do I plant tomatoes?", "How do I start a compost pile?",
    "How do I repot a plant?", "How do I take care of a succulent?", "How do I clean a microwave easily?",
    "How do I get rid of fruit flies in the kitchen?", "How do I remove a splinter?", "How do I treat a minor burn?",
    "How do I make a monthly budget?", "How do I start a savings habit?", "How do I write a good resume?",
    "How do I ask for a raise?", "How should I structure a cover letter?", "How do I take notes during a lecture?",
    "How do I memorize a speech?", "How do I make a good first impression?",
    "How do I start a conversation with someone new?", "How do I say no politely at work?",
    "How do I apologize to a friend?", "How do I set goals that I actually keep?", "How do I build a daily routine?",
    "How do I start meditating?", "How do I start journaling?", "How do I learn to touch type?",
    "How do I get better at mental math?", "How do I learn to juggle?", "How do I warm up before exercise?",
    "How do I do a proper push-up?", "How do I stretch my hamstrings?", "How do I improve my posture at my desk?",
    "How do I choose a good pair of running shoes?", "How do I pack a suitcase efficiently?",
    "How do I beat jet lag?", "How do I plan a road trip?", "How do I set up a tent?",
    "How do I build a campfire safely?", "How do I make a paper airplane?", "How do I fold a paper crane?",
    "How do I wrap a present neatly?", "How do I write a thank-you card?", "How do I make pour-over coffee?",
    "How do I brew green tea properly?", "How do I make lemonade?", "How do I make pancakes from scratch?",
    "How do I bake a simple loaf of bread?", "How do I know when pasta is cooked?",
    "How do I store leftover food safely?", "How do I keep bananas from ripening too fast?",
    "How do I clean my laptop keyboard?", "How do I back up the photos on my phone?",
    "How do I create a strong password?", "How do I take a screenshot on a Windows computer?",
    "How do I free up space on my phone?", "How do I speed up a slow computer?",
    "How do I recognize a phishing email?", "How do I make a pie chart in a spreadsheet?",
    "How do I add up a column of numbers in a spreadsheet?", "How do I cite a website in an essay?",
    "How do I write a strong thesis statement?", "How do I write a good introduction for an essay?",
    "How do I proofread my own writing?", "How do I get started with watercolor painting?",
    "How do I tune a guitar?", "How do I read sheet music?", "How do I start learning to draw?",
    "How do I take care of a new puppy?", "How do I teach a dog to sit?", "How do I introduce a new cat to my home?",
    "How do I clean a fish tank?", "How do I stop my cat from scratching the furniture?",
    "How do I remove sticker residue from glass?", "How do I get wrinkles out of clothes without an iron?",
    "How do I wash a wool sweater?", "How do I hang a picture straight?", "How do I fix a squeaky door?",
    "How do I paint a room?", "How do I patch a small hole in a wall?", "How do I save water at home?",
    "How do I lower my electricity bill?", "How do I start a small vegetable garden on a balcony?",
    "How do I grow herbs indoors?", "How do I train for a 5 km run?", "How do I work out a tip at a restaurant?",
    "How do I double a recipe?", "How do I read a nutrition label?", "How do I organize my closet?",
    "How do I declutter my home?", "How do I make a to-do list that works?",
    "How do I plan a birthday party for a child?", "How do I host a dinner party on a budget?",
    "How do I keep my plants alive while I'm on vacation?", "How do I choose a ripe avocado?",
    "How do I chop an onion quickly?", "How do I boil potatoes?", "How do I roast vegetables?",
    "How do I make a smoothie?", "How do I make overnight oats?",
]
TIP_SUBJECTS = ["staying motivated at the gym", "writing a short story", "keeping my inbox organized",
                "staying calm before an exam", "studying for a math test", "packing light", "making friends at work",
                "waking up early", "learning to play the piano", "remembering what I read", "staying warm in winter",
                "keeping cool in summer without air conditioning", "running my first 10K", "eating more vegetables",
                "drinking less coffee", "keeping my car clean", "writing a good headline", "managing my time better",
                "negotiating the price of a used car", "keeping a conversation going", "working from home",
                "reading more books", "taking care of my skin in winter", "decorating a small apartment",
                "saving for a vacation", "traveling with kids", "staying safe while hiking alone", "growing tomatoes",
                "baking cookies", "taking better notes", "keeping my bike in good condition", "being a good listener",
                "handling criticism at work", "dealing with a noisy neighbor", "choosing a good watermelon"]
TIP_FORMS = ["Give me a tip for {}.", "What's one good tip for {}?", "Any advice for {}?", "Share a quick tip for {}."]
ADVICE_XL = [
    "What should I do if I can't fall asleep?", "What should I do if my phone gets wet?",
    "What should I do if I lock myself out of my house?", "What should I do if I get lost while hiking?",
    "What should I do if a friend forgets my birthday?", "What should I do if I feel overwhelmed at work?",
    "What should I do when I get a nosebleed?", "What should I do if I spill red wine on the carpet?",
    "What should I check before signing a rental contract?", "What should I look for when buying a used bike?",
    "What should I know before adopting a cat?", "What should I eat before a long run?",
    "What should I bring to a job interview?", "What should I write in a sympathy card?",
    "What should I do on my first day at a new job?", "What can I do to feel less nervous on a first date?",
    "How can I be more patient with my kids?", "How can I stop biting my nails?",
    "How can I be more confident when speaking up in meetings?", "How can I make my home smell nice?",
    "How can I keep my energy up in the afternoon?", "How can I focus better when working from home?",
    "How can I get better at chess?", "How can I travel cheaply?", "How can I make my small kitchen feel bigger?",
    "How can I eat healthier on a tight budget?", "How can I get my kids to read more?",
    "How can I improve my singing voice?", "How can I become a morning person?", "How can I keep my data safe online?",
    "How can I cope with a long commute?", "How can I keep in touch with friends who live far away?",
    "How can I learn to cook without a recipe?", "Is it better to exercise in the morning or in the evening?",
    "Is it okay to drink coffee in the afternoon?", "Is it a good idea to study with music on?",
]


def advice() -> list[str]:
    return cross(TIP_FORMS, TIP_SUBJECTS) + ADVICE_XL


RECOMMEND = [
    "Recommend a classic novel for someone who doesn't read much.", "Suggest a board game for a family of four.",
    "Recommend a houseplant that is hard to kill.", "Suggest a good first programming language to learn.",
    "Recommend a hobby I can do at home in the evenings.", "Suggest a healthy dinner with chicken and vegetables.",
    "Recommend a dog breed for a small apartment.", "Suggest a good stretch to do after running.",
    "Recommend a few easy vegetables for a beginner gardener.", "Suggest three snacks for a long car trip.",
    "Recommend a warm drink for a cold evening.", "Suggest an easy dessert for a dinner party.",
    "Suggest a vegetarian lunch idea.", "Suggest a gift for a coworker who is retiring.",
    "Suggest a gift for a ten-year-old who likes science.", "Suggest a gift idea for a grandparent.",
    "Recommend a quick workout I can do without equipment.", "Suggest some fun things to do in a new city.",
    "Suggest an outdoor activity for a sunny afternoon.", "Suggest a fun game to play at a birthday party.",
    "Suggest a theme for a costume party.", "Recommend a simple recipe that uses leftover rice.",
    "Suggest a weekend project for learning to code.", "Suggest a topic for a school science fair project.",
    "Suggest a topic for a short persuasive essay.", "Suggest three questions to ask at the end of a job interview.",
    "Suggest an icebreaker question for a team meeting.", "Recommend a relaxing activity before bed.",
    "Suggest a color scheme for a small bedroom.", "Suggest a few herbs that grow well on a windowsill.",
    "Recommend a good breakfast before an exam.", "Suggest a way to celebrate a friend's promotion.",
    "Suggest a fun activity for a family picnic.", "Recommend a type of tea for someone who doesn't like coffee.",
    "Suggest a budget-friendly date idea.", "Suggest a short poem that is good to learn by heart.",
    "Recommend a good habit to start this month.", "Suggest some easy pets for a child.",
    "Suggest a fun way to learn the multiplication tables.", "Suggest a topic for a history podcast episode.",
    "Suggest a healthy drink instead of soda.", "Suggest a side dish to serve with grilled fish.",
    "Suggest something fun to do on a snowy day.", "Suggest a good kind of book for a long flight.",
    "Suggest a simple craft project for kids.", "Suggest a plan for a relaxing Sunday.",
]
NAME_SUBJECTS = ["a pet hamster", "a flower shop", "a food truck", "a podcast about cooking", "a yoga studio",
                 "a dragon in a fantasy story", "a sailing boat", "a family group chat", "a running club",
                 "a cozy café by the sea", "a board game café", "a pet parrot", "a new puppy", "a fantasy kingdom",
                 "a spaceship in a science fiction story", "a garden gnome", "a school newsletter", "a pet snail",
                 "an app that reminds people to drink water", "a knitting circle"]
NAME_FORMS = ["Suggest a name for {}.", "Give me a name idea for {}.", "What would be a good name for {}?"]


def recommendations() -> list[str]:
    return RECOMMEND + cross(NAME_FORMS, NAME_SUBJECTS)


COMPARE_PAIRS = [("a town", "a city"), ("a violin", "a viola"), ("a cold", "the flu"), ("a sea", "an ocean"),
                 ("a hill", "a mountain"), ("a moth", "a butterfly"), ("a rabbit", "a hare"),
                 ("a turtle", "a tortoise"),
                 ("a dolphin", "a porpoise"), ("espresso", "filter coffee"), ("a latte", "a cappuccino"),
                 ("a tablet", "a laptop"), ("RAM", "storage"), ("a hard drive", "an SSD"), ("HTTP", "HTTPS"),
                 ("a republic", "a monarchy"), ("a loan", "a grant"), ("saving", "investing"), ("a stock", "a bond"),
                 ("a novel", "a short story"), ("a comet", "an asteroid"), ("a planet", "a star"),
                 ("a meteor", "a meteorite"), ("an ape", "a monkey"), ("fog", "mist"), ("a cyclone", "a typhoon"),
                 ("jam", "jelly"), ("baking", "roasting"), ("boiling", "simmering"), ("a sprint", "a marathon"),
                 ("aerobic exercise", "anaerobic exercise"), ("an email", "a letter"), ("a résumé", "a CV"),
                 ("a cheetah", "a leopard"), ("a wasp", "a hornet"), ("a mushroom", "a toadstool"),
                 ("a crow", "a raven"), ("a river", "a canal"), ("a herb", "a spice"), ("butter", "margarine"),
                 ("a muffin", "a cupcake"), ("a sweet potato", "a yam"), ("a podcast", "a radio show"),
                 ("speed", "velocity"), ("an island", "a continent"), ("a dictionary", "a thesaurus"),
                 ("a biography", "an autobiography"), ("an atlas", "a globe"), ("a democracy", "a dictatorship"),
                 ("a desert", "a tundra")]
COMPARE_FORMS = ["What is the difference between {} and {}?", "How is {} different from {}?",
                 "Explain the difference between {} and {}.", "Compare {} and {} in two sentences."]
CHOICES = [
    "Which is better for a beginner, a keyboard or a guitar?", "Is it better to study in the morning or at night?",
    "Should I buy a laptop or a desktop for university?", "Is it better to rent or buy a home?",
    "Which is healthier, brown rice or white rice?", "Which is better for the environment, paper bags or plastic bags?",
    "Should I learn Spanish or French first?", "Is it better to pay off debt or save money first?",
    "Which is easier to grow in a small garden, tomatoes or peppers?", "Is walking or cycling better exercise?",
    "Which is a better pet for a child, a hamster or a guinea pig?",
    "Should I take the train or fly for a 400-kilometer trip?",
    "Is it better to read a book or listen to the audiobook?", "Which is warmer, wool or cotton?",
    "Which lasts longer, an LED bulb or an incandescent bulb?", "Is a warm room or a cool room better for sleep?",
]


def comparisons() -> list[str]:
    return cross(COMPARE_FORMS, COMPARE_PAIRS) + CHOICES


PYTHON_TASKS = ["open a file for writing", "check if a string contains a word", "split a string by commas",
                "turn a list into a set", "find the largest number in a list",
                "count how many times an item appears in a list", "loop over the keys and values of a dictionary",
                "round a number to two decimal places", "generate a random number", "make a string uppercase",
                "remove spaces from the start and end of a string", "check the type of a variable",
                "handle an error with try and except", "give a function a default argument",
                "sort a dictionary by its values", "merge two dictionaries", "get the last item of a list",
                "make a copy of a list", "check if a list is empty", "read a JSON file", "write a CSV file",
                "measure how long my code takes to run", "format a number with thousands separators",
                "ask the user for input", "stop a loop early", "swap two variables", "create a virtual environment",
                "replace a word in a string", "find the index of an item in a list", "convert a number to a string",
                "pause a program for a few seconds", "get the absolute value of a number",
                "combine two lists into pairs"]
PYTHON_FORMS = ["How do I {} in Python?", "What's the easiest way to {} in Python?", "In Python, how can I {}?"]
JS_TASKS = ["add an item to the end of an array", "convert a string to a number", "check if an array contains a value",
            "remove the last element of an array", "write an arrow function", "select an element by its id",
            "add a click event listener to a button", "parse a JSON string", "get the current year",
            "generate a random whole number", "loop over the properties of an object",
            "round a number to the nearest integer"]
GIT_TASKS = ["undo my last commit", "see the commit history", "discard my local changes to a file", "rename a branch",
             "clone a repository", "merge one branch into another", "see which files I have changed"]
GIT_FORMS = ["How do I {} in Git?", "What is the Git command to {}?"]
CODING = [
    "How do I center text with CSS?", "How do I add an image to an HTML page?",
    "How do I make a link open in a new tab in HTML?", "How do I change the background color of a web page with CSS?",
    "How do I make a numbered list in HTML?", "Write a SQL query that counts the rows in a table called orders.",
    "How do I sort query results in SQL?", "What does the GROUP BY clause do in SQL?", "What is a JOIN in SQL?",
    "What is a primary key in a database?",
    "Write a SQL query that finds all customers from Canada in a table called customers.",
    "What is a loop in programming?", "What is an API?", "What is a boolean?", "What is an array?",
    "What is a bug in software?", "What is version control?", "What is object-oriented programming?",
    "What is a database?", "What is the difference between a list and a dictionary in Python?",
    "What does 'return' do in a Python function?", "What is an infinite loop?", "What is a syntax error?",
    "What is JSON?", "What is a string in programming?", "What does the modulo operator do?",
    "What is a for loop used for?", "What is the difference between a compiler and an interpreter?",
    "What is an if statement?", "What is debugging?", "What is a library in programming?",
    "What does None mean in Python?", "Why does indentation matter in Python?",
    "What is the difference between a class and an object in programming?",
    "Write a Python function that checks whether a number is even.",
    "Write a Python function that returns the largest of three numbers.",
    "Write a Python function that counts the vowels in a string.", "Write a JavaScript function that adds two numbers.",
    "Write a Python program that prints the numbers from 1 to 10.",
    "Write a JavaScript function that reverses a string.",
    "Write a Python function that converts Celsius to Fahrenheit.",
    "Write a Python function that computes the factorial of a number.", "Write a simple FizzBuzz program in Python.",
    "Write one line of Python that adds up all the numbers in a list.",
    "Write a Python function that checks whether a word is a palindrome.",
    "Write a Python function that returns the average of a list of numbers.",
    "Write a Python loop that prints each letter of the word 'banana'.",
    "Write a Python function that removes all spaces from a string.",
    "What does print(2 ** 3) show in Python?", "What does len('banana') return in Python?",
    "Why does the Python line 'if x = 5:' give an error?",
    "What is wrong with this Python code: for i in range(10) print(i)",
    "What does the Python expression 7 // 2 give?", "What is the result of 10 % 3 in Python?",
]


def coding() -> list[str]:
    return (cross(PYTHON_FORMS, PYTHON_TASKS) + [f"How do I {t} in JavaScript?" for t in JS_TASKS]
            + cross(GIT_FORMS, GIT_TASKS) + CODING)


HAIKU_TOPICS = ["the first snowfall", "a cup of green tea", "a busy train station", "a koi pond", "the desert at noon",
                "a lighthouse in fog", "an old oak tree", "a kite in the wind", "a field of sunflowers",
                "morning dew", "a fishing boat at dawn", "a hummingbird", "the last day of summer",
                "a paper lantern", "a winding river", "a mountain village", "laundry drying in the sun",
                "a snail after rain", "stars over the desert", "a puddle after a storm"]
HAIKU_FORMS = ["Write a haiku about {}.", "Compose a haiku about {}."]
POEM_TOPICS = ["a grandmother's kitchen", "a train journey", "the first day of spring", "a lost umbrella",
               "a lighthouse keeper", "a cat watching the rain", "the smell of pine trees", "a melting snowman",
               "a walk by the river", "an old photograph", "the city waking up", "a garden at dusk",
               "a night sky full of stars", "learning to ride a bike", "the changing tide", "a favorite sweater"]
POEM_FORMS = ["Write a short poem about {}.", "Write a four-line poem about {}.",
              "Write a short rhyming poem about {}.", "Write a two-line poem about {}."]
LIMERICKS = ["a forgetful wizard", "a cat who loves pizza", "a chef who can't cook", "a dog on a skateboard",
             "a sleepy owl", "a very tall giraffe", "a snail in a hurry", "a clumsy astronaut"]
SENTENCE_TOPICS = ["a thunderstorm at night", "the smell of rain", "a crowded beach", "a snowy village",
                   "an empty playground", "the first warm day of spring", "a farmers' market", "a long road trip",
                   "a cat asleep in the sun", "a kitchen on a holiday morning", "a lighthouse in a storm",
                   "a quiet lake at dawn", "a yellow school bus", "the last day of vacation", "a field of wheat",
                   "a bustling train station", "a bakery at dawn", "an old bookshop"]
SENTENCE_FORMS = ["Write one sentence about {}.", "Describe {} in one sentence.",
                  "Write a single vivid sentence about {}."]
SLOGAN_SUBJECTS = ["a pizza restaurant", "a dog-walking service", "a bookstore café", "a fitness studio", "a car wash",
                   "a flower shop", "a music school", "a plant nursery", "a laundromat", "a summer camp",
                   "a local farmers' market", "a toy store", "a tea house", "a cleaning company",
                   "a bike-sharing program", "a campaign to save water", "a school science club", "a city marathon"]
SLOGAN_FORMS = ["Write a short slogan for {}.", "Come up with a catchy slogan for {}.", "Write a tagline for {}."]
MESSAGES = [
    "Write a short thank-you note to a coworker who helped me move.",
    "Write a short message congratulating a friend on their graduation.",
    "Write a short note welcoming a new neighbor.", "Write a short message wishing a colleague a happy retirement.",
    "Write a short invitation to a barbecue on Saturday.",
    "Write a short reminder about a team meeting on Monday morning.",
    "Write a polite message asking a neighbor to turn down their music.",
    "Write a short email asking my manager for a day off.", "Write a short email to reschedule a dentist appointment.",
    "Write a short email following up after a job interview.",
    "Write a short email thanking a customer for their order.",
    "Write a short note to a teacher explaining my child's absence.",
    "Write a short condolence message for a friend who lost a pet.",
    "Write a short anniversary message for my parents.",
    "Write a short message congratulating a couple on their new baby.",
    "Write a short farewell message for a coworker who is leaving.",
    "Write a short welcome message for new members of a hiking group.",
    "Write a short announcement that the office will be closed on Friday.",
    "Write a short notice asking people to keep the shared kitchen clean.",
    "Write a short review of a cozy Italian restaurant.",
    "Write a short review of a comfortable pair of walking shoes.",
    "Write a short text message telling a friend I'm running late.",
    "Write a short speech to open a school sports day.",
    "Write a short message thanking volunteers after a charity event.",
    "Write a short job ad for a part-time cashier.", "Write a short lost-and-found notice for a black umbrella.",
    "Write a short note to leave for a house sitter.", "Write a short packing list for a weekend at the beach.",
    "Write a short agenda for a one-hour team meeting.", "Write a short letter to a pen pal in another country.",
    "Write a short postcard message from a trip to the mountains.",
    "Write a short message inviting friends to a movie night.",
    "Write a short toast for a friend's thirtieth birthday.",
    "Write a short note thanking a nurse for their care.",
    "Write a short message asking a friend to return a borrowed book.",
]
PRODUCTS = ["a ceramic coffee mug", "a pair of wool socks", "a scented candle", "a handmade leather wallet",
            "a folding bicycle", "a bamboo cutting board", "a knitted blanket", "a desk lamp", "a hiking backpack",
            "a jar of homemade jam"]
PRODUCT_FORMS = ["Write a short product description for {}.", "Write a two-sentence ad for {}."]
STORIES = ["a detective in a small town", "a girl who finds a secret door", "a dragon who is afraid of fire",
           "a pirate who lost his map", "a time traveler", "a haunted lighthouse", "a talking cat",
           "a village where it never stops snowing", "two friends lost in a forest", "a knight who hates armor",
           "a baker with a magic oven", "an astronaut alone on Mars"]
STORY_FORMS = ["Write the opening line of a story about {}.", "Write the first two sentences of a story about {}.",
               "Start a short story about {}."]
DIALOGUES = ["a customer and a waiter", "a teacher and a student on the first day of school",
             "two friends planning a trip", "a shop assistant and a customer returning a jacket",
             "a doctor and a patient with a cold", "two neighbors talking about the weather"]
RIDDLES = ["a clock", "an umbrella", "a shadow", "a candle", "a river", "a piano"]
QUOTES = ["patience", "learning from mistakes", "teamwork", "starting something new", "kindness to strangers",
          "curiosity"]
TITLES = ["a blog post about budget travel", "a children's book about a brave mouse",
          "an article about healthy breakfasts", "a presentation about recycling", "a podcast episode about sleep",
          "a cookbook of family recipes"]


def writing() -> list[str]:
    return (cross(HAIKU_FORMS, HAIKU_TOPICS) + cross(POEM_FORMS, POEM_TOPICS)
            + [f"Write a limerick about {t}." for t in LIMERICKS] + cross(SENTENCE_FORMS, SENTENCE_TOPICS)
            + cross(SLOGAN_FORMS, SLOGAN_SUBJECTS) + MESSAGES + cross(PRODUCT_FORMS, PRODUCTS)
            + cross(STORY_FORMS, STORIES) + [f"Write a short dialogue between {d}." for d in DIALOGUES]
            + [f"Write a riddle whose answer is {r}." for r in RIDDLES]
            + [f"Write a motivational quote about {q}." for q in QUOTES]
            + [f"Suggest a title for {t}." for t in TITLES])


SUMMARY_SENTENCES = [
    "The city council met on Tuesday evening and, after a long discussion about traffic and parking, voted to build "
    "a new bicycle lane along the river.",
    "Although the forecast had promised sunshine, the family's picnic was cut short when a sudden storm rolled in "
    "from the hills.",
    "Researchers found that people who took a short walk after lunch felt more alert and focused during the rest of "
    "the afternoon.",
    "Because the bakery ran out of flour early in the morning, it had to close at noon and put a sign on the door "
    "apologizing to customers.",
    "The museum will stay open later on weekends this summer so that more visitors can see the new exhibition of "
    "ancient pottery.",
    "After months of practice, the school choir won first place at the regional competition and will now travel to "
    "the national finals.",
    "Many people find that keeping a simple notebook of daily expenses helps them notice small purchases that add up "
    "over the month.",
    "The new library app lets readers reserve books, renew loans, and get a reminder a few days before a book is due "
    "back.",
    "Heavy snow closed several mountain roads overnight, and drivers are being asked to stay home unless their "
    "journey is essential.",
    "The small village is famous for its cheese festival, which attracts visitors from all over the region every "
    "October.",
    "Our team finished the project two weeks early because everyone shared their progress in a short meeting every "
    "morning.",
    "The doctor explained that enough sleep, plenty of water, and regular meals can make a big difference to how "
    "energetic you feel.",
    "Scientists have discovered a new species of beetle in the rainforest that is only about as long as a grain of "
    "rice.",
    "The train to the coast was delayed by forty minutes because of a signal problem, so many passengers missed their "
    "connecting buses.",
    "Volunteers spent the whole Saturday cleaning the beach and collected more than two hundred bags of plastic and "
    "other litter.",
    "The restaurant changes its menu every season so that it can use fresh vegetables from local farms.",
    "Even though the book is more than a hundred years old, its story about friendship and loyalty still feels fresh "
    "to many readers.",
    "The company announced that employees will be able to work from home two days a week starting next month.",
    "A neighbor's dog escaped through a gap in the fence and was found an hour later happily playing in the park down "
    "the street.",
    "The football match was postponed because heavy rain had left the pitch completely flooded.",
    "Learning a musical instrument as an adult takes patience, but many people say it is one of the most rewarding "
    "hobbies they have tried.",
    "The bridge will be closed for repairs for three weeks, so drivers should use the northern route into town.",
    "The garden center is offering free workshops on growing vegetables in small spaces such as balconies and window "
    "boxes.",
    "After the power went out during the storm, the neighbors gathered in the street with candles and shared food "
    "from their fridges.",
    "The new bus timetable adds more evening services, making it easier for people who work late to get home.",
    "Our grandmother's soup recipe has been passed down for four generations, and every family member makes it a "
    "little differently.",
    "The hiking trail is well marked but steep in places, so visitors are advised to wear sturdy shoes and carry "
    "plenty of water.",
    "Because so many students signed up, the school will run the after-school coding club twice a week instead of "
    "once.",
    "The local theater group is looking for volunteers to help build sets and sew costumes for its winter play.",
    "Although the cafe is small, it is always busy because its pastries are baked fresh every morning.",
    "The park will plant five hundred new trees this autumn to replace those lost in last year's storms.",
    "Experts recommend backing up important files regularly, because a broken laptop or a lost phone can mean losing "
    "years of photos.",
    "The festival was a great success, with music, food stalls, and games for children lasting late into the "
    "evening.",
    "Because water levels are low, residents are asked not to water their lawns or wash their cars until the end of "
    "the month.",
    "The travel guide suggests visiting the old town early in the morning, before the streets fill up with tour "
    "groups.",
    "Her first novel, which she wrote in the evenings after work, came out last spring and has already been "
    "translated into six languages.",
    "The zoo's new baby elephant took its first steps in the outdoor enclosure yesterday, delighting visitors.",
    "The recipe calls for two cups of flour, a pinch of salt, and enough warm water to make a soft dough.",
    "Because the office printer keeps jamming, the manager has ordered a new one that should arrive on Thursday.",
    "The cycling race was won by a young rider who broke away from the group in the final kilometer and crossed the "
    "line alone.",
]
SUMMARY_FORMS = ['Summarize this sentence in a few words: "{}"', 'Give a one-line summary of this: "{}"',
                 'Shorten this sentence: "{}"', 'What is the main point of this sentence? "{}"',
                 'Rewrite this sentence more simply: "{}"']


def summaries() -> list[str]:
    return cross(SUMMARY_FORMS, SUMMARY_SENTENCES)


GRAMMAR_FIXES = ["She don't like going to the dentist.", "Me and him played chess yesterday.",
                 "Their going to the park after lunch.", "I has finished my homework already.",
                 "The dogs is barking loudly outside.", "He catched the ball with one hand.",
                 "Who's bag is this on the table?", "We was late because of the traffic.",
                 "Its a beautiful day for a walk.", "There is many reasons to learn a new language."]
FIX_FORMS = ['Fix the grammar in this sentence: "{}"', 'Correct the mistakes in this sentence: "{}"']
INFORMAL = ["Hey, can you send me that report ASAP?", "I can't come to the meeting, sorry.",
            "Thanks a lot for the help, that was awesome!", "We need to talk about the budget stuff.",
            "Gonna be late, traffic is crazy.", "Can't make it Friday, how about next week?",
            "The food was kinda bad and the waiter was rude."]
FORMAL_FORMS = ['Make this sentence more formal: "{}"', 'Rewrite this message in a professional tone: "{}"']
BLUNT = ["Give me the report now.", "Move your car, it's blocking mine.", "Stop talking during the movie.",
         "Send me the files today.", "You forgot to call me back."]
STATEMENTS = ["The museum opens at nine.", "She has lived in this town for ten years.",
              "The train leaves from platform four.", "They finished the puzzle together."]
PRESENT = ["I walk to work every day.", "She sends a letter to her aunt.", "We play football in the park.",
           "The children build a sandcastle."]
PASSIVE = ["The window was broken by the wind.", "The letter was delivered by the mail carrier.",
           "The song was sung by the whole class."]
REWRITE_WRITTEN = [
    'Combine these two sentences into one: "The sun was setting. We walked home."',
    'Combine these two sentences into one: "The shop was closed. We went to the market instead."',
    'Make this sentence shorter: "At this point in time we are not able to offer a refund."',
    'Replace "very good" with a stronger word in this sentence: "The concert was very good."',
    'Add a comma where it is needed: "After dinner we watched a film."',
    'Rewrite this sentence so it sounds more exciting: "We went to the beach and swam."',
    'Put these words in the right order to make a sentence: "park the to went we".',
    'Split this long sentence into two: "I woke up late and missed the bus so I walked to school and arrived during '
    'the first lesson."',
]


def rewriting() -> list[str]:
    return (cross(FIX_FORMS, GRAMMAR_FIXES) + cross(FORMAL_FORMS, INFORMAL)
            + [f'Rewrite this more politely: "{s}"' for s in BLUNT]
            + [f'Turn this statement into a question: "{s}"' for s in STATEMENTS]
            + [f'Change this sentence to the past tense: "{s}"' for s in PRESENT]
            + [f'Rewrite this sentence in the active voice: "{s}"' for s in PASSIVE] + REWRITE_WRITTEN)


LIST_SUBJECTS = ["fruits that grow on trees", "musical instruments with strings", "animals that live in the desert",
                 "kinds of pasta", "winter sports", "famous bridges", "breads from different countries",
                 "common spices",
                 "animals that lay eggs", "healthy breakfast foods", "outdoor games for kids",
                 "jobs that involve working with animals", "flowers that bloom in spring", "countries in South America",
                 "rivers in Europe", "languages spoken in India", "ingredients in a Greek salad", "dog breeds",
                 "cat breeds", "kitchen tools every cook needs", "things that are magnetic", "shapes with four sides",
                 "insects that can fly", "citrus fruits", "famous composers", "Olympic sports",
                 "hobbies that keep the mind sharp", "items for a first aid kit", "water sports", "nocturnal animals",
                 "extreme weather events", "colors that go well with navy blue", "card games",
                 "famous landmarks in Europe",
                 "tools for gardening", "good habits for students", "signs of spring",
                 "uses for baking soda", "sources of protein for vegetarians", "animals that live in the Arctic"]
LIST_FORMS = ["Name three {}.", "List five {}.", "Give me three examples of {}.", "Name four {}."]
FUN_FACTS = ["octopuses", "penguins", "volcanoes", "the ocean", "elephants", "owls", "sharks", "honey badgers"]
BRAINSTORM = [
    "Give me three ideas for a birthday surprise.", "Give me five ideas for easy family dinners this week.",
    "Give me three ways to reuse a glass jar.", "Give me some ideas for a short speech at a school assembly.",
    "Give me three ideas for a science experiment at home.", "Give me three ideas for decorating a classroom.",
    "Give me some ideas for a themed dinner night.", "Give me three ideas for a team-building activity.",
    "Give me three conversation starters for a party.", "Give me three ideas for a short story plot.",
    "Give me three ideas for using up stale bread.", "Give me three ideas for a photography project.",
    "Give me three ways to make a boring commute more fun.", "Give me three quick ideas for a kids' lunchbox.",
    "Give me three ideas for a garden on a small budget.", "Give me three ideas for a community event.",
    "Give me three questions to ask a new friend.", "List five things to do before going on a trip.",
]


def lists() -> list[str]:
    return (cross(LIST_FORMS, LIST_SUBJECTS) + [f"Tell me three fun facts about {f}." for f in FUN_FACTS]
            + BRAINSTORM)


KNOWLEDGE = ("capitals", "arithmetic", "units", "science", "history", "language", "geography")


def build_xl(rng: random.Random, taken: set) -> dict[str, list[str]]:
    """The new prompts of the xl set by category (before shuffling); `taken` holds the subject keys the
    arithmetic and unit generators must not use."""
    return {
        "capitals": capitals(), "arithmetic": arithmetic_xl(rng, taken), "units": units(rng, taken),
        "science": science(), "history": history(), "language": language(), "geography": geography(),
        "explanations": explanations(), "definitions": definitions(), "how-to": HOWTO_XL, "advice": advice(),
        "recommendations": recommendations(), "comparisons": comparisons(), "coding": coding(),
        "writing": writing(), "summaries": summaries(), "rewriting": rewriting(), "lists": lists(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Out-of-sample checks.

HUMAN = {"human", "user"}
LANGUAGE_NAMES = ("French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "English", "Japanese", "Chinese",
             "Russian", "Arabic", "Greek", "Latin")
NUMBER_WORDS = {"a": "1", "an": "1", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                "half a": "0.5", "half an": "0.5"}
IRREGULAR = {"feet": "foot", "inches": "inch", "centuries": "century", "millennia": "millennium", "celsius": "celsius"}
ARITHMETIC = re.compile(r"\b(plus|minus|times|multipl\w*|divid\w*|sum|product|difference|squared|square (?:of|root)|"
                        r"cubed|cube of|half|quarters?|thirds?|percent|add|subtract|take away|left|more|each|total|"
                        r"altogether|sequence|remain\w*)\b|\d\s*[-+×÷*/%]\s*\d|\d%", re.I)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
HOW_MANY = re.compile(r"how many ([a-z]+) (?:are|is) (?:there )?in (half an?|an?|one|two|three|four|five|six|seven|"
                      r"eight|nine|ten|eleven|twelve|\d+(?:\.\d+)?) ([a-z ]+?)\s*[?.]", re.I)
CONVERT = re.compile(r"convert (\d+(?:\.\d+)?) ([a-z ]+?) (?:to|into) ([a-z ]+?)\s*[?.]", re.I)
PATTERNS = {  # subject kind -> pattern whose first matching group is the subject
    "capital": re.compile(r"capital(?: city)? of (?:the )?(?:(?:us|u\.s\.|canadian|australian) )?"
                          r"(?:(?:state|province) of )?(?:the )?([^?.,!]+)", re.I),
    "capital city": re.compile(r"has ([\w .'-]+?) as its capital|^([\w .'-]+?) is the capital of which|"
                               r"of which country is ([\w .'-]+?) the capital", re.I),
    "element": re.compile(r"symbol (?:for|of) ([a-z]+)|stand for ([a-z]+) on the periodic table", re.I),
    "formula": re.compile(r"chemical formula (?:for|of) ([a-z ]+?)\s*\?", re.I),
    "unit of": re.compile(r"\bunit (?:is used to measure|used to measure|of|for) (?:the )?([a-z ]+?)\s*\?", re.I),
    "language of": re.compile(r"language (?:is )?(?:mainly |mostly )?spoken in (?:the )?([^?]+)|"
                              r"(?:main|official) languages? (?:of|in) (?:the )?([^?]+)|"
                              r"language do most people in (?:the )?(.+?) speak", re.I),
    "continent of": re.compile(r"continent (?:is|are) (?:the )?(.+?) in\b|on which continent (?:is|are) (?:the )?"
                               r"([^?]+)|^(?:the )?(.+?) is on which continent", re.I),
    "river through": re.compile(r"river (?:that )?(?:flows|runs) through ([^?.]+)", re.I),
    "location of": re.compile(r"in which (?:country|city) (?:is|are) (?:the )?(?:city of )?([^?]+)|"
                              r"which country is (?:the )?(?:city of )?(.+?) in\?|^(?:the )?(.+?) is a city in which|"
                              r"where is (?:the )?(.+?) located", re.I),
    "young of": re.compile(r"\b(?:baby|young) ([a-z]+)(?: called)?\s*\?", re.I),
    "group of": re.compile(r"group of ([a-z]+)", re.I),
}
SYMBOL = re.compile(r"symbol ([A-Z][a-z]?)\b")
QUOTED = re.compile(r"(?<!\w)['‘\"](.+?)['’\"](?!\w)")
IDENTITY = re.compile(r"\b(your (name|creator|developer|maker|model|company)|"
                      r"who (made|created|built|trained|developed) you|are you|yourself|"
                      r"what (ai|model|assistant|llm)|which (ai|model|assistant|llm))\b", re.I)


def loose(text: str) -> str:
    """Case, spacing and punctuation aside."""
    return " ".join(re.findall(r"\w+", text.lower()))


def singular(phrase: str) -> str:
    words = phrase.lower().split()
    last = words[-1]
    last = IRREGULAR.get(last, last[:-1] if last.endswith("s") and not last.endswith("ss") else last)
    return " ".join([*words[:-1], last])


def arithmetic_key(text: str) -> tuple | None:
    """The numbers of an arithmetic question, sorted (None for text that is not one)."""
    numbers = [n.replace(",", "") for n in NUMBER.findall(text)]
    if not numbers or not ARITHMETIC.search(text):
        return None
    return ("arithmetic", *sorted(numbers, key=float))


def quoted(text: str) -> list[str]:
    return [q.strip(" ?!.,").lower() for q in QUOTED.findall(text)]


def subjects(text: str) -> set[tuple]:
    """What a question asks about, where the text says: (kind, subject...) keys. Two questions with a key in common
    ask about the same thing."""
    keys = set()
    if key := arithmetic_key(text):
        keys.add(key)
    for match in HOW_MANY.finditer(text):
        small, amount, big = match.groups()
        keys.add(("units", singular(small), singular(big), NUMBER_WORDS.get(amount.lower(), amount)))
    for match in CONVERT.finditer(text):
        amount, source, target = match.groups()
        keys.add(("units", singular(target), singular(source), amount))
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            subject = next(g for g in match.groups() if g).strip().lower()
            subject = subject.removeprefix("the ").removeprefix("city of ").strip()
            if subject not in ("which country", "which city"):
                keys.add((kind, subject))
    for symbol in SYMBOL.findall(text):
        if symbol in SYMBOLS:
            keys.add(("element", SYMBOLS[symbol]))
    language = next((lang for lang in LANGUAGE_NAMES if re.search(rf"\b{lang}\b", text)), "")
    keys.update(("quoted", term, language) for term in quoted(text))
    return keys


def last_human_turn(row: dict) -> str:
    turns = row.get("conversations") or row.get("messages") or []
    for turn in reversed(turns):
        if (turn.get("from") or turn.get("role")) in HUMAN:
            return turn.get("value") or turn.get("content") or ""
    return ""


def evaluation_sets() -> dict[str, list[str]]:
    """Every prompt the evaluation and the identity training read, by file stem: the facts questions, the identity
    prompts, the ordinary (drift) prompts."""
    sets = {}
    for path in sorted(DATA.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.stem in ("facts", "facts_tune"):
            sets[path.stem] = [row["question"] for row in rows]
        elif path.stem.startswith(("identity", "ordinary_prompts")):
            sets[path.stem] = [last_human_turn(row) for row in rows]
    return sets


def facts_capitals() -> list[str]:
    return [answer for stem in ("facts", "facts_tune")
            for line in (DATA / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
            for row in [json.loads(line)] if row["category"] == "capitals" for answer in row["answers"]]


def held_out_keys(sets: dict[str, list[str]], names: Iterable[str]) -> dict[tuple, str]:
    """Subject key -> the held-out question it comes from."""
    return {key: text for name in names for text in sets[name] for key in subjects(text)}


def check(prompts: list[str], new: list[str], sets: dict[str, list[str]]) -> None:
    """Refuse (SystemExit) a duplicate, a prompt equal to a held-out one, an identity question, a facts subject; and
    for the `new` prompts also an ordinary prompt set's subject, a quoted word or title of the facts or ordinary
    sets (in any language), a unit pair they convert (any amount), or a mention of a facts capital."""
    problems = []
    seen: dict[str, str] = {}
    for text in prompts:
        if loose(text) in seen:
            problems.append(f"duplicate: {text!r} / {seen[loose(text)]!r}")
        seen.setdefault(loose(text), text)
    for name, texts in sets.items():
        for text in texts:
            if loose(text) in seen:
                problems.append(f"equals a prompt of {name}.jsonl: {seen[loose(text)]!r}")
    for text in prompts:
        if IDENTITY.search(QUOTED.sub("", text)):
            problems.append(f"asks about the assistant: {text!r}")
    facts = ("facts", "facts_tune")
    ordinary = [name for name in sets if name.startswith("ordinary_prompts")]
    facts_keys, all_keys = held_out_keys(sets, facts), held_out_keys(sets, [*facts, *ordinary])
    strict_terms = {q: text for name in [*facts, *ordinary] for text in sets[name] for q in quoted(text)}
    unit_pairs = {key[1:3]: text for key, text in all_keys.items() if key[0] == "units"}
    capitals = re.compile(r"\b(" + "|".join(map(re.escape, facts_capitals())) + r")\b")
    fresh = set(new)
    for text in prompts:
        held = all_keys if text in fresh else facts_keys
        for key in sorted(subjects(text) & held.keys(), key=str):
            problems.append(f"same subject {key} as {held[key]!r}: {text!r}")
        if text in fresh:
            for pair in {key[1:3] for key in subjects(text) if key[0] == "units"} & unit_pairs.keys():
                problems.append(f"converts {pair} like {unit_pairs[pair]!r}: {text!r}")
            for term in quoted(text):
                if term in strict_terms:
                    problems.append(f"quotes {term!r} like {strict_terms[term]!r}: {text!r}")
            if match := capitals.search(text):
                problems.append(f"names the facts capital {match.group(0)!r}: {text!r}")
    if problems:
        raise SystemExit("anchor prompts are not out of sample:\n  " + "\n  ".join(problems))


def write(path: Path, prompts: list[str]) -> None:
    path.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": p}]}, ensure_ascii=False) + "\n"
                            for p in prompts), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xl", action="store_true", help="build anchor_prompts_xl.jsonl (the default set plus ~2000)")
    parser.add_argument("--out", type=Path, help="output file (default: dpo_scale/data/anchor_prompts[_xl].jsonl)")
    args = parser.parse_args()
    sets = evaluation_sets()
    default = build_default()
    if not args.xl:
        check(default, [], sets)
        out = args.out or DATA / "anchor_prompts.jsonl"
        write(out, default)
        print(f"{len(default)} anchor prompts -> {out}")
        return
    taken = set(held_out_keys(sets, sets)) | {key for text in default for key in subjects(text)}
    by_category = build_xl(random.Random(XL_SEED), taken)
    known = {loose(p) for p in default}
    new: list[str] = []
    for category, texts in by_category.items():
        kept = [t for t in texts if loose(t) not in known and not known.add(loose(t))]
        if len(kept) != len(texts):
            raise SystemExit(f"{category}: {len(texts) - len(kept)} prompts repeat earlier ones")
        new += kept
    random.Random(XL_SEED).shuffle(new)
    prompts = default + new
    random.Random(XL_SEED + 1).shuffle(prompts)  # any first N rows: a sample of the whole set
    check(prompts, new, sets)
    out = args.out or DATA / "anchor_prompts_xl.jsonl"
    write(out, prompts)
    knowledge = sum(len(by_category[c]) for c in KNOWLEDGE)
    print(f"{len(prompts)} anchor prompts ({len(default)} default + {len(new)} new) -> {out}")
    print(f"  new: {knowledge} factual ({', '.join(f'{c} {len(by_category[c])}' for c in KNOWLEDGE)}); "
          f"{len(new) - knowledge} chat ("
          + ", ".join(f"{c} {len(t)}" for c, t in by_category.items() if c not in KNOWLEDGE) + ")")


if __name__ == "__main__":
    main()
