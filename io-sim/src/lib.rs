//! Simulated world for Drongo (filled by the simulation issue).
