//! Random "adjective-animal-123" names for runs and logged models created without one.

use rand::Rng;
use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "abundant",
    "agreeable",
    "amazing",
    "auspicious",
    "bold",
    "brave",
    "bright",
    "calm",
    "capable",
    "carefree",
    "casual",
    "classy",
    "clean",
    "clever",
    "crawling",
    "dapper",
    "debonair",
    "delicate",
    "enchanting",
    "fearless",
    "gentle",
    "gifted",
    "glamorous",
    "honorable",
    "hilarious",
    "illustrious",
    "judicious",
    "kindly",
    "learned",
    "legendary",
    "likeable",
    "loud",
    "luminous",
    "marvelous",
    "mysterious",
    "nebulous",
    "nimble",
    "orderly",
    "overjoyed",
    "painted",
    "polite",
    "puzzled",
    "redolent",
    "resilient",
    "rogue",
    "rumbling",
    "salty",
    "secretive",
    "selective",
    "sedate",
    "serious",
    "shivering",
    "silent",
    "skillful",
    "smiling",
    "sneaky",
    "stately",
    "suave",
    "sassy",
    "tasteful",
    "thoughtful",
    "trusting",
    "unequaled",
    "upbeat",
    "useful",
    "valuable",
    "victorious",
    "welcoming",
    "whimsical",
    "wise",
    "youthful",
    "zealous",
];

const ANIMALS: &[&str] = &[
    "ant", "ape", "asp", "bass", "bat", "bear", "bee", "bird", "boar", "bug", "calf", "carp",
    "cat", "chimp", "cod", "colt", "conch", "cow", "crab", "crane", "croc", "crow", "cub", "deer",
    "doe", "dog", "dolphin", "donkey", "dove", "duck", "eel", "elk", "fawn", "finch", "fish",
    "flea", "fly", "foal", "fowl", "fox", "frog", "gnat", "gnu", "goat", "goose", "grouse", "grub",
    "gull", "hare", "hawk", "hen", "hog", "horse", "hound", "jay", "kit", "kite", "koi", "lamb",
    "lark", "loon", "lynx", "mare", "midge", "mink", "mole", "moose", "moth", "mouse", "mule",
    "newt", "owl", "ox", "panda", "penguin", "perch", "pig", "pug", "quail", "ram", "rat", "ray",
    "robin", "roo", "rook", "seal", "shad", "shark", "sheep", "shoat", "shrew", "shrike", "shrimp",
    "skink", "skunk", "sloth", "slug", "smelt", "snail", "snake", "snipe", "sow", "sponge",
    "squid", "squirrel", "stag", "steed", "stoat", "stork", "swan", "tern", "toad", "trout",
    "turtle", "vole", "wasp", "whale", "wolf", "worm", "wren", "yak", "zebra",
];

/// A fresh random name such as `bold-owl-123`.
pub fn random_name() -> String {
    let mut rng = rand::rng();
    let adj = ADJECTIVES.choose(&mut rng).copied().unwrap_or("bold");
    let animal = ANIMALS.choose(&mut rng).copied().unwrap_or("owl");
    format!("{adj}-{animal}-{}", rng.random_range(0..1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_have_three_parts() {
        let n = super::random_name();
        assert_eq!(n.split('-').count(), 3, "{n}");
    }
}
