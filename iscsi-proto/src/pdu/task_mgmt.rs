//! Task Management Function Request (RFC 7143 section 11.5) and Response
//! (11.6): aborts and resets.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, DataSn, Itt, Lun, StatSn};

mod field {
    use super::super::field::Field;
    pub(super) const FUNCTION_MASK: u8 = 0x7f;
    pub(super) const RESPONSE: usize = 2;
    pub(super) const REFERENCED_TASK_TAG: Field = 20..24;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const REF_CMD_SN: Field = 32..36;
    pub(super) const EXP_DATA_SN: Field = 36..40;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
}
use self::field::*;

open_enum! {
    /// Task management function code (RFC 7143 11.5.1).
    pub struct TaskFunction(u8) {
        ABORT_TASK = 1,
        ABORT_TASK_SET = 2,
        CLEAR_ACA = 3,
        CLEAR_TASK_SET = 4,
        LOGICAL_UNIT_RESET = 5,
        TARGET_WARM_RESET = 6,
        TARGET_COLD_RESET = 7,
        TASK_REASSIGN = 8,
    }
}

open_enum! {
    /// Task management function response (RFC 7143 11.6.1).
    pub struct TmfResponse(u8) {
        FUNCTION_COMPLETE = 0,
        TASK_DOES_NOT_EXIST = 1,
        LUN_DOES_NOT_EXIST = 2,
        TASK_STILL_ALLEGIANT = 3,
        REASSIGNMENT_NOT_SUPPORTED = 4,
        NOT_SUPPORTED = 5,
        AUTHORIZATION_FAILED = 6,
        REJECTED = 255,
    }
}

/// A Task Management Function Request PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TaskFunction,
    pub lun: Lun,
    pub itt: Itt,
    /// The task to abort (ABORT TASK, TASK REASSIGN); reserved otherwise.
    pub referenced_task_tag: Itt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// The CmdSN of the referenced task (ABORT TASK).
    pub ref_cmd_sn: CmdSn,
    pub exp_data_sn: DataSn,
}

impl TaskMgmtRequest {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            immediate: bhs[OPCODE] & IMMEDIATE_BIT != 0,
            function: TaskFunction(bhs[FLAGS] & FUNCTION_MASK),
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            referenced_task_tag: Itt(u32_at(bhs, REFERENCED_TASK_TAG)),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
            ref_cmd_sn: CmdSn(u32_at(bhs, REF_CMD_SN)),
            exp_data_sn: DataSn(u32_at(bhs, EXP_DATA_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 40..48]);
        bhs[OPCODE] = Opcode::TASK_MGMT_REQUEST.0 | if self.immediate { IMMEDIATE_BIT } else { 0 };
        bhs[FLAGS] = FINAL_BIT | (self.function.0 & FUNCTION_MASK);
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, REFERENCED_TASK_TAG, self.referenced_task_tag.0);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
        put_u32(bhs, REF_CMD_SN, self.ref_cmd_sn.0);
        put_u32(bhs, EXP_DATA_SN, self.exp_data_sn.0);
    }
}

/// A Task Management Function Response PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TmfResponse,
    pub itt: Itt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
}

impl TaskMgmtResponse {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            response: TmfResponse(bhs[RESPONSE]),
            itt: Itt(u32_at(bhs, ITT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[3..4, 8..16, 20..24, 36..48]);
        bhs[OPCODE] = Opcode::TASK_MGMT_RESPONSE.0;
        bhs[FLAGS] = FINAL_BIT;
        bhs[RESPONSE] = self.response.0;
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn request_bytes() {
        let expected = bhs(&[
            (0, &[0x42, 0x81]),
            (8, &[0, 1]),
            (
                16,
                &[0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 1],
            ),
        ]);
        let req = TaskMgmtRequest {
            immediate: true,
            function: TaskFunction::ABORT_TASK,
            lun: Lun::from_index(1),
            itt: Itt(5),
            referenced_task_tag: Itt(4),
            cmd_sn: CmdSn(6),
            exp_stat_sn: StatSn(7),
            ref_cmd_sn: CmdSn(3),
            exp_data_sn: DataSn(1),
        };
        assert_emits(req, 0, &expected);
    }

    #[test]
    fn response_bytes() {
        let expected = bhs(&[
            (0, &[0x22, 0x80, 0x01]),
            (16, &[0, 0, 0, 5]),
            (24, &[0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0x27]),
        ]);
        let rsp = TaskMgmtResponse {
            response: TmfResponse::TASK_DOES_NOT_EXIST,
            itt: Itt(5),
            stat_sn: StatSn(8),
            exp_cmd_sn: CmdSn(7),
            max_cmd_sn: CmdSn(0x27),
        };
        assert_emits(rsp, 0, &expected);
    }
}
