mod map_ddrescue;
mod guest;
mod engine;
mod map_fuzz;
mod media_blockdev;
mod media_testmode;
mod engine_durability;
mod lifecycle;
