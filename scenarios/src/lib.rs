//! Named failure scenarios (filled by the simulation issue).
