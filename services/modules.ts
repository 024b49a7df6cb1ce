import { concertModule } from "./concert/index.js";
import { coordinatorModule } from "./coordinator/index.js";
import type { ServiceModule } from "./platform/suite.js";
import { paymentModule } from "./payment/index.js";
import { pointModule } from "./point/index.js";
import { queueModule } from "./queue/index.js";
import { tokenModule } from "./token/index.js";

/** Every service of the suite that is implemented, in start order. */
export const modules: ServiceModule[] = [tokenModule, concertModule, queueModule, pointModule, paymentModule, coordinatorModule];
