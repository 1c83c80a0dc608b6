mod map_ddrescue;
mod guest;
mod engine;
mod map_fuzz;
